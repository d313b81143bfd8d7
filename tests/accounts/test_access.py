"""Accounts: the owner, a teammate, someone not signed in, and a disabled user. Admins manage
teammates on the team page (tests/accounts/test_team.py); superusers also have Django's admin."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from segmentation.models import Run
from tests.factories import stored_image

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture
def run(owner) -> Run:
    image = stored_image("cat.jpg")
    return Run.objects.create(
        owner=owner, image=image, input={"prompt": "whiskers"}, status=Run.Status.SUCCEEDED
    )


def test_a_teammate_sees_the_owners_runs(
    signed_in: Client, teammate_client: Client, run: Run
) -> None:
    for who in (signed_in, teammate_client):
        assert "whiskers" in who.get("/runs/").content.decode()
        page = who.get(run.get_absolute_url())
        assert page.status_code == 200 and "whiskers" in page.content.decode()
        assert "by ada" in page.content.decode()


def test_someone_not_signed_in_sees_nothing(client: Client, run: Run) -> None:
    for path in ("/runs/", run.get_absolute_url(), f"/runs/{run.pk}/thumb.jpg", "/usage/"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/accounts/login/?next=")


def test_a_disabled_users_open_session_stops_working(client: Client, owner, run: Run) -> None:
    assert client.login(username="ada", password="correct horse battery")
    assert client.get("/runs/").status_code == 200
    owner.is_active = False
    owner.save()
    # The session cookie is still there, but it no longer signs anyone in.
    for path in ("/runs/", run.get_absolute_url()):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    response = client.post(f"/runs/{run.pk}/delete/")
    assert response.status_code == 302 and Run.objects.filter(pk=run.pk).exists()
    # ... and the password no longer works either.
    response = client.post(
        "/accounts/login/", {"username": "ada", "password": "correct horse battery"}
    )
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_admins_see_the_team_and_admin_links_and_others_do_not(signed_in: Client, owner) -> None:
    html = signed_in.get("/runs/").content.decode()
    assert 'href="/team/"' not in html and 'href="/admin/"' not in html
    assert signed_in.get("/admin/auth/user/").status_code == 302  # to the admin's sign-in
    owner.is_staff = owner.is_superuser = True
    owner.save()
    html = signed_in.get("/runs/").content.decode()
    assert 'href="/team/"' in html and 'href="/admin/"' in html
    assert signed_in.get("/admin/auth/user/").status_code == 200


def test_an_admin_adds_disables_and_promotes_teammates(signed_in: Client, owner) -> None:
    owner.is_staff = owner.is_superuser = True
    owner.save()
    response = signed_in.post(
        "/admin/auth/user/add/",
        {
            "username": "linus",
            "usable_password": "true",
            "password1": "a fine long password",
            "password2": "a fine long password",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    linus = User.objects.get(username="linus")
    assert linus.is_active and not linus.is_staff
    newcomer = Client()
    assert newcomer.login(username="linus", password="a fine long password")
    assert newcomer.get("/runs/").status_code == 200

    # Disable and promote through the change form, as an admin would.
    form = signed_in.get(f"/admin/auth/user/{linus.pk}/change/").context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k != "password"}
    data.update(
        {
            "is_active": "",
            "is_staff": "on",
            "date_joined_0": linus.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": linus.date_joined.strftime("%H:%M:%S"),
            "groups": [],
            "user_permissions": [],
        }
    )
    data.pop("date_joined", None)
    data.pop("last_login", None)
    data = {k: v for k, v in data.items() if v not in (False,)}
    data.pop("is_active")
    response = signed_in.post(f"/admin/auth/user/{linus.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    linus = User.objects.get(pk=linus.pk)  # read afresh: the admin changed the row
    assert linus.is_staff and not linus.is_active
    assert newcomer.get("/runs/").status_code == 302  # the open session ended
