"""The team page in Chromium, as an admin uses it: find it in the top bar, add a teammate
(errors first), disable, re-enable and promote, at a desktop's width and a phone's; a teammate
who opens it gets the app's 403 page. axe-core finds nothing serious on any of them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.browser.helpers import serious, shot
from tests.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()


@pytest.fixture
def the_team(admin: Any, owner: Any, teammate: Any, disabled: Any) -> None:
    """root (admin), ada (named, with runs), grace, hedy (a second admin), mallory (disabled)."""
    owner.first_name, owner.last_name, owner.email = "Ada", "Lovelace", "ada@example.com"
    owner.last_login = timezone.now() - dt.timedelta(hours=3)
    owner.save()
    teammate.email = "grace.hopper@navy.example.mil"
    teammate.save()
    User.objects.create_user(
        "hedy",
        password="a third long pass",
        first_name="Hedy",
        last_name="Lamarr",
        is_staff=True,
        is_superuser=True,
    )
    disabled.is_active = False
    disabled.save()
    for _ in range(3):
        make_run(owner)
    make_run(teammate)


def signed_in_as(browser: Any, live_server: Any, username: str, password: str, width: int) -> Any:
    context = browser.new_context(viewport={"width": width, "height": 900 if width > 600 else 844})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/runs/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/runs/")
    return page


def row(page: Any, username: str) -> Any:
    return page.locator("tr", has=page.locator(".team-username", has_text=username))


def test_an_admin_manages_the_team(browser, live_server, the_team) -> None:
    page = signed_in_as(browser, live_server, "root", "an admin's long pass", 1280)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    problems: dict[str, list[str]] = {}

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Team").click()
    page.wait_for_url("**/team/")
    assert page.get_by_role("heading", name="Team").is_visible()
    assert "Disabled" in row(page, "mallory").inner_text()
    assert "Admin" in row(page, "hedy").inner_text()
    assert row(page, "root").get_by_role("button").count() == 0  # nothing to click on oneself
    problems["team"] = serious(page)
    shot(page, "team-1280")

    # Adding: a duplicate name, a bad email and a weak password are refused beside each field.
    page.get_by_role("link", name="Add teammate").click()
    page.get_by_label("Username").fill("ADA")
    page.get_by_label("Email (optional)").fill("linus@")
    page.get_by_label("Password", exact=True).fill("12345678")
    page.get_by_label("Password again").fill("12345678")
    page.get_by_role("button", name="Add teammate").click()
    page.locator("#field-username .field-errors").wait_for()
    assert "already exists" in page.locator("#field-username .field-errors").inner_text()
    assert "valid email" in page.locator("#field-email .field-errors").inner_text()
    assert "too common" in page.locator("#field-password1 .field-errors").inner_text()
    assert page.get_by_role("alert").inner_text().startswith("Nobody was added.")
    problems["add with errors"] = serious(page)
    shot(page, "team-add-errors-1280")

    page.get_by_label("Username").fill("linus")
    page.get_by_label("First name (optional)").fill("Linus")
    page.get_by_label("Email (optional)").fill("linus@example.com")
    page.get_by_label("Password", exact=True).fill("a fine long password")
    page.get_by_label("Password again").fill("a fine long password")
    page.get_by_role("button", name="Add teammate").click()
    page.wait_for_url("**/team/")
    assert "linus is on the team" in page.locator(".messages").inner_text()
    assert "Teammate" in row(page, "linus").inner_text()

    # Disabling asks first.
    page.get_by_role("link", name="Disable grace").click()
    assert page.get_by_role("heading", name="Disable grace?").is_visible()
    problems["confirm"] = serious(page)
    shot(page, "team-confirm-disable-1280")
    page.get_by_role("button", name="Disable").click()
    page.wait_for_url("**/team/")
    assert "grace is disabled" in page.locator(".messages").inner_text()
    assert "Disabled" in row(page, "grace").inner_text()

    page.get_by_role("button", name="Re-enable mallory").click()
    page.wait_for_url("**/team/")
    assert "mallory can sign in again" in page.locator(".messages").inner_text()
    assert "Active" in row(page, "mallory").inner_text()

    page.get_by_role("button", name="Make admin linus").click()
    page.wait_for_url("**/team/")
    assert "linus is now an admin" in page.locator(".messages").inner_text()
    assert "Admin" in row(page, "linus").inner_text()
    problems["after changes"] = serious(page)  # the messages included
    shot(page, "team-after-changes-1280")

    assert not User.objects.get(username="grace").is_active
    assert User.objects.get(username="mallory").is_active
    assert User.objects.get(username="linus").is_staff
    assert errors == []
    assert problems == {k: [] for k in problems}
    page.context.close()


def test_the_team_pages_on_a_phone(browser, live_server, the_team) -> None:
    page = signed_in_as(browser, live_server, "root", "an admin's long pass", 390)
    page.goto(f"{live_server.url}/team/")
    problems = {"team": serious(page)}
    # Each teammate is a card that fits the screen: nothing scrolls sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert row(page, "mallory").get_by_role("button", name="Re-enable mallory").is_visible()
    shot(page, "team-390")

    page.goto(f"{live_server.url}/team/add/")
    page.get_by_label("Username").fill("grace")
    page.get_by_label("Email (optional)").fill("not an email")
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label("Password again").fill("shorter")
    page.get_by_role("button", name="Add teammate").click()
    page.locator("#field-username .field-errors").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    problems["add with errors"] = serious(page)
    shot(page, "team-add-errors-390")
    assert problems == {"team": [], "add with errors": []}
    page.context.close()


def test_a_teammate_gets_the_admins_only_page(browser, live_server, the_team) -> None:
    page = signed_in_as(browser, live_server, "ada", "correct horse battery", 1280)
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Team").count() == 0
    assert nav.get_by_role("link", name="Admin").count() == 0
    response = page.goto(f"{live_server.url}/team/")
    assert response.status == 403
    assert page.get_by_role("heading", name="Only admins can manage the team").is_visible()
    assert "Ask hedy or root" in page.locator("main").inner_text()
    assert serious(page) == []
    shot(page, "team-403-1280")
    page.context.close()


@pytest.mark.parametrize("width", [1280, 390])
def test_an_admin_sets_a_teammates_budget(browser, live_server, the_team, width) -> None:
    page = signed_in_as(browser, live_server, "root", "an admin's long pass", width)
    page.goto(f"{live_server.url}/team/")
    assert "No limit" in row(page, "ada").inner_text()
    page.get_by_role("link", name="Set ada’s budget").click()
    assert page.get_by_role("heading", name="ada’s monthly budget").is_visible()

    # Not an amount: said beside the field, and what was typed stays.
    page.get_by_label("Monthly budget (dollars)").fill("12.345")
    page.get_by_role("button", name="Save budget").click()
    errors = page.locator("#field-amount .field-errors")
    errors.wait_for()
    assert "at most 2 digits after the point" in errors.inner_text()
    assert page.get_by_label("Monthly budget (dollars)").input_value() == "12.345"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    problems = {"budget with errors": serious(page)}
    shot(page, f"team-budget-errors-{width}")

    page.get_by_label("Monthly budget (dollars)").fill("12.50")
    page.get_by_role("button", name="Save budget").click()
    page.wait_for_url("**/team/#teammate-*")
    assert "ada’s monthly budget is now $12.50." in page.locator(".messages").inner_text()
    assert "$12.50" in row(page, "ada").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    problems["team with a budget"] = serious(page)
    assert problems == {k: [] for k in problems}
    page.context.close()
