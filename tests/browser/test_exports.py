"""Exports in Debian's Chromium: "Only what I see" follows the viewer (and a stand-in viewer),
and without a viewer the links export everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from tests.browser.helpers import shot
from tests.factories import coins_run

pytestmark = pytest.mark.django_db(transaction=True)


def axe_violations(page) -> list[str]:
    """axe-core's findings inside the Export card (the rest of the page is not ours)."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright").Axe()
    results = axe.run(page, context="#exports")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
    ]


# The viewer's contract (static/sam3web/viewer.js), played by a stand-in: `booted` keeps the
# real viewer from replacing it.
FAKE_VIEWER = """
window.sam3Viewer = {
  booted: true,
  ready: () => true,
  state: {visible: [2], threshold: 0.5, opacity: 0.3, colours: {1: "#FF0000", 2: "rgb(0, 170, 0)"}},
  visible() { return this.state.visible; },
  threshold() { return this.state.threshold; },
  opacity() { return this.state.opacity; },
  colours() { return this.state.colours; },
};
"""


def test_only_what_i_see_follows_the_viewer(page, live_server, signed_in: Client, standin) -> None:
    run = coins_run(signed_in, standin)
    url = f"{live_server.url}/runs/{run.id}/"
    base = f"/runs/{run.id}/export/"
    toggle = page.get_by_label("Only what I see")
    json_link = page.get_by_role("link", name="JSON", exact=True)

    # The real viewer: once it is ready, the toggle appears and exports what it draws.
    page.goto(url)
    page.wait_for_function("() => window.sam3Viewer && window.sam3Viewer.ready()")
    toggle.check()
    assert json_link.get_attribute("href").startswith(base + "json?visible=1,2&colours=1:")
    assert "opacity=0.5" in json_link.get_attribute("href")
    shot(page, "exports-1280")
    assert axe_violations(page) == []
    # Hiding an instance in the viewer changes the links at once.
    page.get_by_label("Show instance 1").uncheck()
    page.wait_for_function(
        "() => document.querySelector('#exports a[data-export]').search.startsWith('?visible=2&')"
    )
    toggle.uncheck()

    # No viewer on the page: no toggle, and the links export everything.
    page.route("**/viewer.js", lambda route: route.abort())
    page.goto(url)
    page.wait_for_load_state("load")
    assert toggle.is_hidden()
    assert json_link.get_attribute("href") == base + "json"
    page.unroute("**/viewer.js")

    page.add_init_script(FAKE_VIEWER)
    page.goto(url)
    toggle.wait_for()
    assert json_link.get_attribute("href") == base + "json"
    toggle.check()
    query = "?visible=2&threshold=0.5&colours=1:ff0000,2:00aa00&opacity=0.3"
    assert json_link.get_attribute("href") == base + "json" + query
    assert page.get_by_role("link", name="ZIP of masks").get_attribute("href") == (
        base + "masks.zip" + query
    )
    assert "1 of 2 instances" in page.locator("#export-scope").inner_text()

    # The viewer changes and says so on its own element (the event does not bubble).
    page.evaluate(
        """() => {
          Object.assign(window.sam3Viewer.state, {visible: [1, 2, 7], threshold: 0});
          const root = document.createElement("div");
          document.body.append(root);
          root.dispatchEvent(new CustomEvent("sam3:viewchange"));
        }"""
    )
    query = "?visible=1,2&colours=1:ff0000,2:00aa00&opacity=0.3"
    assert json_link.get_attribute("href") == base + "json" + query
    with page.expect_download() as download:
        json_link.click()
    data = json.loads(Path(download.value.path()).read_bytes())
    assert data["view"]["visible"] == [1, 2] and data["view"]["opacity"] == 0.3
    assert [i["colour"] for i in data["instances"]] == ["#ff0000", "#00aa00"]
    assert download.value.suggested_filename == f"coins-{run.id.hex[:8]}.json"

    # Changed without an event: the link still follows at the moment of the click.
    page.evaluate("() => { window.sam3Viewer.state.visible = [1]; }")
    with page.expect_download() as download:
        page.get_by_role("link", name="COCO").click()
    coco = json.loads(Path(download.value.path()).read_bytes())
    assert [a["id"] for a in coco["annotations"]] == [1]

    toggle.uncheck()
    assert json_link.get_attribute("href") == base + "json"

    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#exports").scroll_into_view_if_needed()
    card = page.locator("#exports").bounding_box()
    assert card and card["width"] <= 390
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    shot(page, "exports-390")
    assert axe_violations(page) == []
