"""Every page a person uses, checked by axe-core in Chromium at desktop and phone widths:
no serious or critical accessibility violations (labels, contrast, focus order, names)."""

from __future__ import annotations

import time

import pytest
from axe_playwright_python.sync_playwright import Axe

from segmentation.models import Run
from tests.browser.helpers import serious, shot
from tests.sample_images import IMAGES

pytestmark = pytest.mark.django_db(transaction=True)

AXE = Axe()


@pytest.mark.parametrize("width", [1280, 390])
def test_every_page_is_accessible(page, worker, standin, live_server, width: int) -> None:  # noqa: F811
    page.set_viewport_size({"width": width, "height": 900})
    standin.complete_after = 0.3
    problems: dict[str, list[str]] = {}

    page.goto(f"{live_server.url}/runs/new/")
    problems["new run"] = serious(page)
    page.get_by_label("Image", exact=True).set_input_files(str(IMAGES / "coins.png"))
    page.get_by_label("Text prompt").fill("coin")
    page.get_by_text("Edit as JSON").click()  # folded while the editor draws
    page.get_by_label("Point prompts").fill('[{"x": 9999, "y": 1, "label": 1}]')
    page.get_by_role("button", name="Submit run").click()
    page.locator("#field-point_prompts .field-errors").wait_for()
    problems["form with errors"] = serious(page)

    page.get_by_label("Point prompts").fill("")
    page.get_by_label("Return multiple masks").check()
    page.get_by_role("button", name="Submit run").click()
    page.wait_for_url("**/runs/*/")
    deadline = time.monotonic() + 30
    while not Run.objects.get().settled:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    page.reload()
    page.locator("table.instances").wait_for()
    page.locator(".sam3-viewer[data-state=ready]").wait_for()
    problems["run page"] = serious(page)
    shot(page, f"a11y-run-{width}")
    # An instance selected, the details and (on a phone) the menus open.
    page.locator("table.instances tbody tr .sv-score").first.click()
    page.get_by_text("Details", exact=True).click()
    if width < 640:
        page.get_by_text("More actions").click()
        page.get_by_text("Menu", exact=True).click()
    problems["run page, opened"] = serious(page)

    page.goto(f"{live_server.url}/runs/")
    problems["history"] = serious(page)
    shot(page, f"a11y-history-{width}")
    page.goto(f"{live_server.url}/runs/?status=bogus&since=nope")
    problems["history with filter errors"] = serious(page)
    page.goto(f"{live_server.url}/usage/")
    problems["usage"] = serious(page)
    page.goto(f"{live_server.url}/runs/{Run.objects.get().pk}/delete/")
    problems["delete"] = serious(page)
    page.goto(f"{live_server.url}/runs/not-a-run/")
    problems["404"] = serious(page)
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/accounts/login/")
    problems["sign in"] = serious(page)

    assert {name: found for name, found in problems.items() if found} == {}
