"""Sign-in: every page needs a signed-in user; a fresh install creates its first admin (with
the setup code: tests/accounts/test_setup.py)."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db

PAGES = ["/", "/runs/", "/runs/new/", "/runs/00000000-0000-0000-0000-000000000000/", "/images/1/"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_a_signed_in_user(client: Client, owner, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def setup_code() -> str:
    """The code as an admin would read it: what ``manage.py setup_code`` prints."""
    out = io.StringIO()
    call_command("setup_code", stdout=out)
    return out.getvalue().split()[2]


def test_a_fresh_install_offers_to_create_the_first_admin(client: Client) -> None:
    response = client.get("/runs/new/", follow=True)
    assert response.redirect_chain[-1][0] == "/setup/"
    assert "Create admin account" in response.content.decode()
    assert "manage.py setup_code" in response.content.decode()  # where to find the code

    response = client.post(
        "/setup/",
        {
            "setup_code": setup_code(),
            "username": "grace",
            "password1": "a long unusual pass",
            "password2": "a long unusual pass",
        },
    )
    assert response.status_code == 302
    grace = get_user_model().objects.get()
    assert grace.is_superuser and grace.is_staff
    assert client.get("/runs/new/").status_code == 200  # signed in straight away


def test_setup_is_closed_once_anyone_exists(client: Client, owner) -> None:
    assert client.get("/setup/")["Location"] == "/accounts/login/"
    response = client.post(
        "/setup/",
        {"setup_code": "", "username": "mallory", "password1": "x" * 20, "password2": "x" * 20},
    )
    assert response.status_code == 302
    assert not get_user_model().objects.filter(username="mallory").exists()


def test_setup_shows_password_errors_beside_the_field(client: Client) -> None:
    code = setup_code()
    response = client.post(
        "/setup/", {"setup_code": code, "username": "g", "password1": "123", "password2": "124"}
    )
    assert response.status_code == 200
    assert "didn’t match" in response.content.decode()
    assert not get_user_model().objects.exists()
    assert setup_code() == code  # the right code was not used up by a form with errors


def test_sign_in_and_out(client: Client, owner) -> None:
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    bad = client.post("/accounts/login/", {"username": "ada", "password": "nope"})
    assert bad.status_code == 200
    assert "correct username and password" in bad.content.decode()
    good = client.post("/accounts/login/", {"username": "ada", "password": "correct horse battery"})
    assert good.status_code == 302
    assert client.get("/runs/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/runs/").status_code == 302


def test_createsuperuser_noinput_works(monkeypatch, client: Client) -> None:
    """The scripted way to make the first admin, without the setup code."""
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long unusual pass")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "root@example.com")
    call_command("createsuperuser", "--noinput")
    assert get_user_model().objects.get(username="root").is_superuser
    assert client.get("/setup/")["Location"] == "/accounts/login/"


def test_unknown_and_malformed_ids_are_404(signed_in: Client) -> None:
    assert signed_in.get("/runs/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert signed_in.get("/runs/not-a-uuid/").status_code == 404
    assert signed_in.get("/images/999999/").status_code == 404
