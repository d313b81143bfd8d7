"""The compare page in Debian's Chromium: one canvas viewer per run, kept in step (opacity,
minimum score, zoom and position) until "Keep in step" is unticked; axe at desktop and phone
widths. The runs are real rows with real image and mask files (tests.test_compare.make_run)."""

from __future__ import annotations

import pytest

from tests.browser.helpers import TAB10, close, serious, shot
from tests.factories import finished_run

pytestmark = pytest.mark.django_db(transaction=True)

# Viewer i's canvas pixel at image point (x, y), after the next frame has been drawn.
PIXEL_JS = """async ([i, x, y]) => {
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const v = window.sam3Viewer.all()[i];
  const c = document.querySelectorAll(".sam3-viewer .sv-canvas")[i];
  const px = Math.floor((x * v.scale + v.tx) * v.dpr);
  const py = Math.floor((y * v.scale + v.ty) * v.dpr);
  return Array.from(c.getContext("2d").getImageData(px, py, 1, 1).data.slice(0, 3));
}"""

# Where viewer i shows image point (x, y) on the page, in CSS pixels (for the mouse).
PAGE_POINT_JS = """([i, x, y]) => {
  const v = window.sam3Viewer.all()[i];
  const r = document.querySelectorAll(".sam3-viewer .sv-canvas")[i].getBoundingClientRect();
  return [r.left + x * v.scale + v.tx, r.top + y * v.scale + v.ty];
}"""


def states(page) -> list[dict]:
    return page.evaluate("() => sam3Viewer.all()")


def pixel(page, i: int, x: float, y: float) -> tuple[int, ...]:
    return tuple(page.evaluate(PIXEL_JS, [i, x, y]))


def first_centre(run) -> tuple[float, float]:
    mask = run.masks.get(index=0)
    return ((mask.x_min + mask.x_max) / 2, (mask.y_min + mask.y_max) / 2)


def in_step(a: dict, b: dict) -> bool:
    return (
        a["zoom"] == pytest.approx(b["zoom"], rel=1e-3)
        and a["centre"]["x"] == pytest.approx(b["centre"]["x"], abs=0.01)
        and a["centre"]["y"] == pytest.approx(b["centre"]["y"], abs=0.01)
    )


def test_two_viewers_keep_in_step_until_told_not_to(page, page_errors, live_server, owner) -> None:
    # Two images of different sizes (451×300 and 600×400): zoom and position are shared
    # relative to each one's fit and size.
    cat = finished_run(owner, image="cat.jpg", prompt="cat", max_masks=2)
    cup = finished_run(owner, image="coffee.jpg", prompt="cup", max_masks=4)
    page.goto(f"{live_server.url}/runs/compare/?ids={cat.id}&ids={cup.id}")
    page.wait_for_function(
        "() => sam3Viewer.all().length === 2 && sam3Viewer.all().every((v) => v.ready)"
    )
    one, two = page.locator(".compare-col").nth(0), page.locator(".compare-col").nth(1)
    keep = page.get_by_label("Keep in step")
    assert keep.is_visible() and keep.is_checked()
    assert [s["run"] for s in states(page)] == [str(cat.id), str(cup.id)]
    assert [(s["width"], s["height"]) for s in states(page)] == [(451, 300), (600, 400)]
    assert all(s["synced"] and s["zoom"] == pytest.approx(1) for s in states(page))
    marked = page.locator("tr.differs").evaluate_all("(rows) => rows.map((r) => r.dataset.field)")
    assert marked == ["image", "prompt", "max_masks"]
    assert "differs" in page.locator("tr[data-field=max_masks] th").inner_text().lower()

    # Opacity, moved in the first viewer: the second's slider, read-out and pixels follow.
    one.locator(".sv-opacity").fill("0.8")
    assert [s["opacity"] for s in states(page)] == [0.8, 0.8]
    assert two.locator(".sv-opacity").input_value() == "0.8"
    assert two.locator(".sv-opacity-out").inner_text() == "80%"
    one.locator(".sv-opacity").fill("1")
    assert close(pixel(page, 1, *first_centre(cup)), TAB10[0], 2)

    # The minimum score, moved in the second: 0.85 leaves instance 1 (0.9) in both.
    two.locator(".sv-threshold").fill("0.85")
    assert [s["threshold"] for s in states(page)] == [0.85, 0.85]
    assert [s["visible"] for s in states(page)] == [[1], [1]]
    assert one.locator(".sv-threshold-out").inner_text() == "0.85"
    assert one.locator(".sv-count").inner_text() == "1 of 2 shown"

    # Zoom with the first's button, pan it with the keyboard: the second shows the same part.
    one.get_by_role("button", name="Zoom in").click()
    a, b = states(page)
    assert a["zoom"] == pytest.approx(1.25) and in_step(a, b)
    one.locator(".sv-canvas").focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowUp")
    a, b = states(page)
    assert a["centre"]["x"] < 0.49 and a["centre"]["y"] < 0.49, a
    assert in_step(a, b), (a, b)
    # The wheel over the second, about a point off centre: the first follows that too.
    page.mouse.move(*page.evaluate(PAGE_POINT_JS, [1, 420, 260]))
    page.mouse.wheel(0, -300)
    page.wait_for_function("() => sam3Viewer.all()[1].zoom > 2")
    a, b = states(page)
    assert in_step(a, b), (a, b)
    assert b["centre"]["x"] > a["centre"]["x"] - 0.01  # moved towards the pointer, both
    shot(page, "compare-zoomed")
    # "0" fits the first again; the second too.
    one.locator(".sv-canvas").focus()
    page.keyboard.press("0")
    assert [s["zoom"] for s in states(page)] == [pytest.approx(1), pytest.approx(1)]
    one.locator(".sv-opacity").fill("0.5")
    shot(page, "compare")

    # "Keep in step" off: each viewer on its own.
    keep.uncheck()
    assert not any(s["synced"] for s in states(page))
    one.locator(".sv-opacity").fill("0.3")
    two.locator(".sv-threshold").fill("0")
    one.get_by_role("button", name="Zoom in").click()
    one.get_by_role("button", name="Zoom in").click()
    a, b = states(page)
    assert (a["opacity"], b["opacity"]) == (0.3, 0.5)
    assert (a["threshold"], b["threshold"]) == (0.85, 0)
    assert a["zoom"] == pytest.approx(1.5625) and b["zoom"] == pytest.approx(1)
    assert two.locator(".sv-opacity-out").inner_text() == "50%"
    assert two.locator(".sv-count").inner_text() == "2 of 2 shown"
    # Back on: the others join the viewer moved last (the first).
    keep.check()
    a, b = states(page)
    assert (b["opacity"], b["threshold"]) == (0.3, 0.85)
    assert in_step(a, b) and b["zoom"] == pytest.approx(1.5625)
    assert two.locator(".sv-count").inner_text() == "1 of 2 shown"

    assert serious(page) == []
    # A phone: the columns stack, nothing sticks out sideways, the viewers fit their width.
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function(
        """() => [...document.querySelectorAll('.sv-canvas')]
          .every((c) => c.getBoundingClientRect().right <= 390)"""
    )
    layout = page.evaluate(
        """() => {
      const cols = [...document.querySelectorAll('.compare-col')]
        .map((c) => c.getBoundingClientRect());
      return [document.documentElement.scrollWidth, cols[1].top >= cols[0].bottom,
              Math.max(...cols.map((r) => r.right))];
    }"""
    )
    assert layout[0] <= 390 and layout[1] and layout[2] <= 390, layout
    # Still in step at the new size: the same part of each image.
    a, b = states(page)
    assert in_step(a, b), (a, b)
    shot(page, "compare-phone")
    assert serious(page) == []
    assert page_errors == []


def test_the_refusal_page_is_accessible(page, live_server, owner) -> None:
    run = finished_run(owner, masks=0)
    page.goto(f"{live_server.url}/runs/compare/?ids={run.id}&ids=not-a-run")
    assert page.get_by_role("heading", name="These runs cannot be compared").is_visible()
    assert page.get_by_text("Not a run id: “not-a-run”.").is_visible()
    page.get_by_role("link", name="history page").click()
    page.wait_for_url("**/runs/")
    page.go_back()
    assert serious(page) == []
    page.set_viewport_size({"width": 390, "height": 844})
    assert serious(page) == []
