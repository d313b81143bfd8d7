"""A fresh install in Chromium: the first visitor is sent to /setup/, a wrong setup code is
refused beside its field, and the code as printed by ``manage.py setup_code`` (typed in lower
case, with spaces) makes the admin and signs them in."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from tests.browser.helpers import serious, shot

pytestmark = pytest.mark.django_db(transaction=True)


def printed_code() -> str:
    out = io.StringIO()
    call_command("setup_code", stdout=out)
    return out.getvalue().split()[2]


def fill(page, code: str) -> None:
    page.get_by_label("Setup code").fill(code)
    page.get_by_label("Username").fill("grace")
    page.get_by_label("Password", exact=True).fill("a long unusual pass")
    page.get_by_label("Password again").fill("a long unusual pass")
    page.get_by_role("button", name="Create admin account").click()


@pytest.mark.parametrize("width", [1280, 390])
def test_the_first_admin_needs_the_setup_code(browser, live_server, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900 if width > 600 else 844})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/runs/")
    page.wait_for_url("**/setup/")
    assert page.get_by_label("Setup code").evaluate("e => e === document.activeElement")
    assert "manage.py setup_code" in page.locator("#field-setup_code").inner_text()

    code = printed_code()
    fill(page, "2222-3333-4444" if code != "2222-3333-4444" else "5555-6666-7777")
    errors = page.locator("#field-setup_code .field-errors")
    errors.wait_for()
    assert "not this install's setup code" in errors.inner_text()
    assert page.get_by_label("Setup code").get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert serious(page) == []
    shot(page, f"setup-wrong-code-{width}")
    assert not get_user_model().objects.exists()

    fill(page, " " + code.lower().replace("-", " ") + " ")
    page.wait_for_url("**/runs/new/")
    assert "You are this team's admin" in page.locator(".messages").inner_text()
    assert get_user_model().objects.get().is_superuser
    context.close()
