"""A public link in Debian's Chromium: the owner makes it on the run's page, a second browser
that has never signed in opens it and sees the masks in the viewer, the owner revokes it, and
the second browser's reload is the "not found" page. The live app, the real worker (run in this
process until the run is settled) and the Runflow stand-in."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.browser.helpers import (
    BOXES,
    SHOTS,
    TAB10,
    blend,
    box_form,
    centre,
    close,
    pixel,
    run_to_the_end,
    serious,
    shot,
    viewer_ready,
)

# The signed-in page in Chromium, as the other browser tests have it.

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_polling")]


def test_a_public_link_shows_the_masks_to_a_stranger_until_it_is_revoked(
    browser, page, standin, live_server, owner
) -> None:
    standin.complete_after = 0.1
    run = run_to_the_end(owner, **box_form())
    assert run.masks.count() == 4
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto(f"{live_server.url}/runs/{run.id}/")
    share = page.locator("#share")
    assert share.get_by_label("Link for teammates").input_value() == (
        f"{live_server.url}/runs/{run.id}/"
    )
    share.get_by_role("button", name="Create public link").click()
    # htmx swaps the panel in place: no reload, and the note is inside it.
    share.get_by_role("button", name="Revoke public link").wait_for()
    assert "Public link created" in share.get_by_role("status").inner_text()
    link = share.get_by_label("Public link").input_value()
    run.refresh_from_db()
    assert link == f"{live_server.url}/s/{run.share_token}/"
    share.get_by_role("button", name="Copy the public link").click()
    assert page.evaluate("() => navigator.clipboard.readText()") == link
    assert serious(page, "#share") == []
    share.screenshot(path=str(SHOTS / "share-panel.png"))

    # A second browser, never signed in.
    stranger = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        other = stranger.new_page()
        other.set_default_timeout(15_000)
        asked: list[str] = []
        other.on("request", lambda request: asked.append(request.url))
        errors: list[str] = []
        other.on("pageerror", lambda exc: errors.append(str(exc)))
        other.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type in ("error", "warning") and "readback" not in m.text
                else None
            ),
        )
        response = other.goto(link)
        assert response is not None and response.status == 200
        assert response.headers["referrer-policy"] == "no-referrer"
        viewer_ready(other)
        assert other.locator(".sv-count").inner_text() == "4 of 4 shown"
        assert other.locator("table.instances tbody tr").count() == 4
        # Nothing of the app is offered: no navigation, no sign-out, no share controls.
        assert other.get_by_role("navigation").count() == 0
        assert other.get_by_role("button", name="Revoke public link").count() == 0
        assert other.get_by_role("link", name="History").count() == 0
        shot(other, "share")
        assert serious(other) == []
        # The masks are drawn: each instance's colour at 50% over the photo's own pixels.
        shown = [pixel(other, *centre(box)) for box in BOXES]
        other.locator(".sv-canvas").focus()
        other.keyboard.press("h")
        assert other.locator(".sv-count").inner_text() == "0 of 4 shown"
        bare = [pixel(other, *centre(box)) for box in BOXES]
        for n, (seen, under) in enumerate(zip(shown, bare, strict=True)):
            assert close(seen, blend(under, TAB10[n], 0.5)), (n, seen, under)
        # Everything it loaded came from under the link, or was a static file.
        paths = {urlsplit(url).path for url in asked}
        assert all(p.startswith((f"/s/{run.share_token}/", "/static/")) for p in paths), paths
        assert f"/s/{run.share_token}/viewer.json" in paths
        assert errors == []

        # The owner revokes; the stranger's reload is the "not found" page.
        share.get_by_role("button", name="Revoke public link").click()
        share.get_by_role("button", name="Create public link").wait_for()
        assert "revoked" in share.get_by_role("status").inner_text()
        response = other.reload()
        assert response is not None and response.status == 404
        assert other.get_by_role("heading", name="Nothing here").is_visible()
        assert other.locator(".sam3-viewer").count() == 0
        # The files it loaded are gone too, not only the page.
        for path in sorted(p for p in paths if not p.startswith("/static/")):
            assert other.request.get(live_server.url + path).status == 404, path
    finally:
        stranger.close()
