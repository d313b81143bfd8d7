"""The API page in Debian's Chromium, as a teammate uses it: find it in the top bar, make a
token (shown once, copied with the button, gone after a reload), revoke it through the
confirmation page, rotate the callback secret; at a desktop's width and a phone's. axe-core
finds nothing serious on any of it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from playwright.sync_api import expect

from accounts.models import ApiToken, Profile
from tests.browser.helpers import new_page, serious, shot

pytestmark = pytest.mark.django_db(transaction=True)


def works(raw: str) -> bool:
    return Client().get("/v1/runs", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200


def test_a_teammate_makes_revokes_and_rotates(page: Any, live_server: Any, owner: Any) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    problems: dict[str, list[str]] = {}

    page.get_by_role("navigation", name="Main").get_by_role("link", name="API").click()
    page.wait_for_url("**/api/")
    assert page.get_by_role("heading", name="API", exact=True).is_visible()
    assert "You have no tokens yet." in page.locator("#tokens").inner_text()
    problems["empty"] = serious(page)
    shot(page, "api-1280")

    # A token, named: shown once, with a button that copies it.
    page.get_by_label("Token name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    page.wait_for_url("**/api/#new-token")
    shown = page.get_by_label("The new token")
    raw = shown.input_value()
    assert re.fullmatch(r"sam3web_[A-Za-z0-9_-]{43}", raw)
    assert works(raw)
    page.get_by_role("button", name="Copy the new token").click()
    copy = page.locator('button[data-copy-from="new-token-value"]')  # its name changes now
    expect(page.locator("#copy-status")).to_have_text("Copied the token.")
    expect(copy.locator("[data-label]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == raw
    assert f"Bearer {raw}" in page.locator("#example-python").inner_text()
    problems["token shown"] = serious(page)
    shot(page, "api-token-shown-1280")

    page.reload()
    assert page.get_by_label("The new token").count() == 0
    assert raw not in page.content()
    row = page.locator("#tokens tbody tr", has_text="laptop")
    assert f"{raw[:12]}…" in row.inner_text()
    assert "Bearer SAM3WEB_API_KEY" in page.locator("#example-python").inner_text()

    # Revoking asks first, on a page of its own.
    page.get_by_role("link", name="Revoke laptop").click()
    assert page.get_by_role("heading", name="Revoke the token “laptop”?").is_visible()
    problems["confirm"] = serious(page)
    shot(page, "api-revoke-confirm-1280")
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_url("**/api/")
    assert "is revoked" in page.locator(".messages").inner_text()
    assert "Revoked" in row.inner_text()
    assert row.get_by_role("link").count() == 0
    assert not works(raw)
    assert ApiToken.objects.get().revoked_at is not None

    # Rotating the secret: the old one keeps signing for 24 hours, and can be ended early.
    old = page.get_by_label("Your secret").input_value()
    assert old == Profile.of(owner).callback_secret
    page.get_by_role("button", name="Rotate").click()
    page.wait_for_url("**/api/#signing-secret")
    assert (
        "Callbacks are still signed with the old one until"
        in page.locator(".messages").inner_text()
    )
    new = page.get_by_label("New secret").input_value()
    assert new != old and new == Profile.of(owner).callback_secret
    rotation = page.locator("#rotation")
    assert "Rotation under way." in rotation.inner_text() and old[:10] in rotation.inner_text()
    assert page.get_by_role("button", name="Rotate").count() == 0
    problems["rotated"] = serious(page)
    shot(page, "api-rotated-1280")
    page.get_by_role("button", name="End the old secret now").click()
    page.wait_for_url("**/api/#signing-secret")
    assert page.locator("#rotation").count() == 0
    assert Profile.of(owner).signing_secret() == new

    assert problems == {k: [] for k in problems}
    assert errors == []


def test_the_api_page_on_a_phone(browser: Any, live_server: Any, owner: Any) -> None:
    ApiToken.issue(owner, "laptop")
    context, page = new_page(
        browser, f"{live_server.url}/api/", viewport={"width": 390, "height": 844}
    )
    try:
        # The top bar's menu has it.
        page.get_by_text("Menu").click()
        link = page.get_by_role("navigation", name="Main").get_by_role("link", name="API")
        assert link.get_attribute("aria-current") == "page"
        page.get_by_text("Menu").click()
        page.get_by_label("Token name").fill("phone")
        page.get_by_role("button", name="Create token").click()
        page.wait_for_url("**/api/#new-token")
        assert page.get_by_label("The new token").input_value().startswith("sam3web_")
        # Nothing wider than the phone but the code examples, which scroll on their own.
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390
        assert serious(page) == []
        shot(page, "api-390")
    finally:
        context.close()


def test_the_api_docs_read_well_on_a_desktop_and_a_phone(
    page: Any, live_server: Any, browser: Any
) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API").click()
    page.get_by_role("link", name="API docs").first.click()
    page.wait_for_url("**/api/docs/")
    text = page.locator("main").inner_text()
    for path in ("/v1/models/meta/sam-3/image/runs", "/v1/runs/{run_id}", "/v1/runs"):
        assert path in text
    for field in ("max_masks", "point_prompts", "Idempotency-Key", "INSUFFICIENT_CREDIT"):
        assert field in text
    assert serious(page) == []
    shot(page, "api-docs-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert serious(page) == []
    shot(page, "api-docs-390")
