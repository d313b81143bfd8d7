"""The setup code that guards a fresh install's first-admin page: printed by
``manage.py setup_code``, the same in every process, asked for by /setup/, refused beside the
field when wrong, rate limited for the whole install, and gone once the admin is made."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from accounts import setup
from accounts.models import SetupCode
from tests.factories import database_url
from tests.sample_images import ROOT

pytestmark = pytest.mark.django_db
User = get_user_model()

LINE = re.compile(
    r"^Setup code: ([2-9A-HJKMNP-TW-Z]{4}-[2-9A-HJKMNP-TW-Z]{4}-[2-9A-HJKMNP-TW-Z]{4}) "
    r"\(enter it at /setup/ to create the first admin\)\n$"
)
ADMIN = {
    "username": "grace",
    "password1": "a long unusual pass",
    "password2": "a long unusual pass",
}


def printed() -> str:
    out = io.StringIO()
    call_command("setup_code", stdout=out)
    return out.getvalue()


def code() -> str:
    match = LINE.match(printed())
    assert match, printed()
    return match[1]


def wrong(right: str) -> str:
    """A code of the right shape that is not the right one."""
    return "2222-3333-4444" if right != "2222-3333-4444" else "5555-6666-7777"


def field_errors(response, name: str) -> str:
    """The error text shown beside one field (its _field.html block)."""
    html = response.content.decode()
    block = re.search(rf'<div class="field has-error" id="field-{name}">(.*?)</div>', html, re.S)
    return re.sub(r"<[^>]+>|\s+", " ", block[1]) if block else ""


def test_the_command_prints_one_line_with_the_code_and_where_to_enter_it() -> None:
    first = printed()
    assert LINE.match(first), first
    assert printed() == first  # the same code every time, until it is used
    assert SetupCode.objects.count() == 1


def test_the_command_says_so_when_the_install_has_an_admin(admin) -> None:
    assert printed() == "This install already has an admin.\n"
    assert not SetupCode.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_every_process_sees_the_same_code_and_the_command_is_quiet() -> None:
    """Another process (as bin/serve runs it, beside the web processes) prints the code this
    one has, with nothing else on stdout or stderr, and exits 0; with an admin, the line that
    says so, still exit 0."""
    here = code()
    env = {"DATABASE_URL": database_url()}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "setup_code"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = run()
    assert (done.returncode, done.stdout, done.stderr) == (0, printed(), "")
    assert here in done.stdout
    User.objects.create_user("root", password="an admin's long pass", is_staff=True)
    done = run()
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "This install already has an admin.\n",
        "",
    )


def test_codes_are_three_groups_from_an_unambiguous_alphabet() -> None:
    codes = {setup.display(setup.new_code()) for _ in range(200)}
    assert len(codes) == 200
    for c in codes:
        assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", c), c
        assert not set(c) & set("01OILUV"), c


def test_the_setup_page_explains_where_the_code_is(client: Client) -> None:
    html = client.get("/setup/").content.decode()
    assert 'name="setup_code"' in html
    assert "bin/serve" in html and ".venv/bin/python manage.py setup_code" in html
    # Visiting the page made the code the command prints, and does not make another.
    c = code()
    client.get("/setup/")
    assert code() == c


def test_a_wrong_code_is_refused_beside_the_field_and_nothing_is_made(client: Client) -> None:
    response = client.post("/setup/", {"setup_code": wrong(code()), **ADMIN})
    assert response.status_code == 200
    assert "That is not this install&#x27;s setup code." in field_errors(response, "setup_code")
    assert not User.objects.exists()


def test_a_missing_code_is_asked_for(client: Client) -> None:
    response = client.post("/setup/", {"setup_code": "  ", **ADMIN})
    assert "Enter the setup code." in field_errors(response, "setup_code")
    assert not User.objects.exists()


def test_case_spaces_and_dashes_do_not_matter(client: Client) -> None:
    typed = " " + code().replace("-", " ").lower() + " "
    response = client.post("/setup/", {"setup_code": typed, **ADMIN})
    assert response.status_code == 302, field_errors(response, "setup_code")
    assert User.objects.get().username == "grace"


def test_the_code_works_once(client: Client) -> None:
    c = code()
    assert client.post("/setup/", {"setup_code": c, **ADMIN}).status_code == 302
    assert not SetupCode.objects.exists()
    other = Client()
    response = other.post("/setup/", {"setup_code": c, **ADMIN, "username": "mallory"})
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert list(User.objects.values_list("username", flat=True)) == ["grace"]


def test_an_install_left_without_users_gets_a_new_code(client: Client) -> None:
    c = code()
    client.post("/setup/", {"setup_code": c, **ADMIN})
    User.objects.all().delete()
    assert code() != c


def test_wrong_codes_are_rate_limited_from_any_address(settings) -> None:
    """Ten wrong codes, each from another address: the first four are only refused, the fifth
    starts the cooldown, the rest are refused unchecked, and so is the right code, until the
    cooldown has passed; then the right code works."""
    settings.SAM3WEB_SETUP_COOLDOWN = 3
    right = code()
    answers = []
    for i in range(10):
        client = Client(REMOTE_ADDR=f"198.51.100.{i + 1}")
        response = client.post("/setup/", {"setup_code": wrong(right), **ADMIN})
        assert response.status_code == 200
        answers.append(field_errors(response, "setup_code"))
    assert all("not this install" in a and "wait" not in a for a in answers[:4])
    assert "2 more wrong tries" in answers[2] and "1 more wrong try" in answers[3]
    assert "Too many wrong codes: wait 3 seconds, then try again." in answers[4]
    for a in answers[5:]:
        assert re.search(r"Too many wrong setup codes were tried\. Wait [1-3] seconds?", a), a

    during = Client(REMOTE_ADDR="203.0.113.9").post("/setup/", {"setup_code": right, **ADMIN})
    assert "Too many wrong setup codes were tried" in field_errors(during, "setup_code")
    assert not User.objects.exists()

    time.sleep(3.1)
    after = Client(REMOTE_ADDR="203.0.113.9").post("/setup/", {"setup_code": right, **ADMIN})
    assert after.status_code == 302, field_errors(after, "setup_code")
    assert User.objects.get().is_superuser


def test_the_cooldown_is_ten_minutes_by_default(client: Client) -> None:
    right = code()
    for _ in range(5):
        response = client.post("/setup/", {"setup_code": wrong(right), **ADMIN})
    assert "wait 10 minutes, then try again" in field_errors(response, "setup_code")
    response = client.post("/setup/", {"setup_code": right, **ADMIN})
    assert "Wait 10 minutes, then try again." in field_errors(response, "setup_code")


def test_wrong_tries_older_than_the_window_are_forgotten(client: Client, settings) -> None:
    settings.SAM3WEB_SETUP_WINDOW = 1
    right = code()
    for _ in range(4):
        client.post("/setup/", {"setup_code": wrong(right), **ADMIN})
    time.sleep(1.1)
    for _ in range(4):
        response = client.post("/setup/", {"setup_code": wrong(right), **ADMIN})
    assert "Too many" not in field_errors(response, "setup_code")
    assert client.post("/setup/", {"setup_code": right, **ADMIN}).status_code == 302


def test_a_form_with_errors_still_counts_a_wrong_code(client: Client) -> None:
    """The code is checked whatever else is wrong with the form, so guesses cannot hide
    behind a mismatched password."""
    right = code()
    for _ in range(5):
        client.post("/setup/", {"setup_code": wrong(right), "username": "", "password1": "x"})
    response = client.post("/setup/", {"setup_code": right, **ADMIN})
    assert "Too many wrong setup codes were tried" in field_errors(response, "setup_code")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "1 second"), (1, "1 second"), (59.5, "60 seconds"), (60, "1 minute"), (61, "2 minutes")],
)
def test_wait_text(seconds: float, text: str) -> None:
    assert setup.wait_text(seconds) == text
