"""The run page's canvas viewer in Debian's Chromium: the live app, the real worker (run in
this process until the run is settled) and the Runflow stand-in. Checks read the viewer's
canvas pixels at image points mapped through its current view transform."""

from __future__ import annotations

import io
import re

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.utils import timezone
from PIL import Image, ImageDraw

from segmentation.models import Mask, Run
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
from tests.factories import drain, settled, stored_image, submit

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_polling")]

SCORES = [0.95, 0.91, 0.87, 0.83]

# How far the canvas drawn step by step (only what changed: dirty regions, panning by moving
# what was drawn) is from the same view drawn afresh: the largest channel difference, the
# number of pixels that differ by more than 1, and the number of pixels.
INCREMENTAL_VS_FULL_JS = """async () => {
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const c = document.querySelector(".sam3-viewer .sv-canvas");
  const g = c.getContext("2d");
  const before = g.getImageData(0, 0, c.width, c.height).data;
  sam3Viewer.redraw(true);
  const after = g.getImageData(0, 0, c.width, c.height).data;
  let worst = 0;
  const seams = new Set(); // columns and rows where they differ by more than 1
  for (let i = 0; i < before.length; i++) {
    const d = Math.abs(before[i] - after[i]);
    worst = Math.max(worst, d);
    if (d > 1) seams.add(`${(i >> 2) % c.width},${Math.floor(i / 4 / c.width)}`);
  }
  return [worst, seams.size, c.width * c.height];
}"""

# Where image point (x, y) is on the page, in CSS pixels (for the mouse).
PAGE_POINT_JS = """([x, y]) => {
  const v = window.sam3Viewer.view();
  const r = document.querySelector(".sam3-viewer .sv-canvas").getBoundingClientRect();
  return [r.left + x * v.scale + v.tx, r.top + y * v.scale + v.ty];
}"""


# The images the page has loaded (their paths), in order.
IMAGES_LOADED_JS = """() => performance.getEntriesByType("resource")
  .map((e) => new URL(e.name).pathname).filter((p) => p.startsWith("/images/"))"""


def in_view(page, x: float, y: float) -> bool:
    return page.evaluate(
        """([x, y]) => { const v = sam3Viewer.view();
        const c = document.querySelector(".sam3-viewer .sv-canvas");
        const cx = x * v.scale + v.tx, cy = y * v.scale + v.ty;
        return cx >= 0 && cy >= 0 && cx < c.clientWidth && cy < c.clientHeight; }""",
        [x, y],
    )


def test_the_viewer_draws_each_instance_and_follows_every_control(
    page, page_errors, standin, live_server, owner
) -> None:
    standin.complete_after = 0.1
    run = run_to_the_end(owner, **box_form())
    assert run.masks.count() == 4
    page.goto(f"{live_server.url}/runs/{run.id}/")
    viewer_ready(page)
    page.evaluate(
        """() => { window.__events = [];
        document.querySelector('.sam3-viewer').addEventListener('sam3:viewchange',
          (e) => window.__events.push(e.detail)); }"""
    )
    # The viewer has taken the server composite's place.
    assert page.locator(".overlay-wrap").is_hidden()
    assert page.locator(".sv-canvas").is_visible()
    assert page.locator(".sv-count").inner_text() == "4 of 4 shown"
    api = page.evaluate(
        "() => [sam3Viewer.visible(), sam3Viewer.threshold(), sam3Viewer.opacity(),"
        " sam3Viewer.colours()]"
    )
    assert api == [
        [1, 2, 3, 4],
        0,
        0.5,
        {str(n): f"#{r:02x}{g:02x}{b:02x}" for n, (r, g, b) in enumerate(TAB10, 1)},
    ]
    shot(page, "viewer-desktop")

    shown = {n: pixel(page, *centre(box)) for n, box in enumerate(BOXES, 1)}
    # Hiding every instance (H) leaves the image's own pixels.
    page.locator(".sv-canvas").focus()
    page.keyboard.press("h")
    assert page.locator(".sv-count").inner_text() == "0 of 4 shown"
    bare = {n: pixel(page, *centre(box)) for n, box in enumerate(BOXES, 1)}
    for n in shown:
        # At the mask's centre: the instance colour at 50% over the image.
        assert close(shown[n], blend(bare[n], TAB10[n - 1], 0.5)), (n, shown[n], bare[n])
    page.keyboard.press("h")
    assert page.locator(".sv-count").inner_text() == "4 of 4 shown"
    assert page.locator(".sv-all").inner_text() == "Hide all"

    # One instance off with its checkbox: its pixels go back to the image's, the others stay.
    page.get_by_label("Show instance 2").uncheck()
    assert close(pixel(page, *centre(BOXES[1])), bare[2], 2)
    assert close(pixel(page, *centre(BOXES[0])), shown[1], 2)
    assert page.evaluate("() => sam3Viewer.visible()") == [1, 3, 4]
    assert page.locator(".sv-count").inner_text() == "3 of 4 shown"
    assert page.evaluate("() => window.__events.at(-1).visible") == [1, 3, 4]
    page.get_by_label("Show instance 2").check()

    # The minimum score: above instance 3's 0.87, instances 3 and 4 go, at once.
    page.locator(".sv-threshold").fill("0.88")
    assert page.locator(".sv-count").inner_text() == "2 of 4 shown"
    assert page.locator(".sv-threshold-out").inner_text() == "0.88"
    assert close(pixel(page, *centre(BOXES[2])), bare[3], 2)
    assert close(pixel(page, *centre(BOXES[1])), shown[2], 2)
    assert page.evaluate("() => [sam3Viewer.visible(), sam3Viewer.threshold()]") == [[1, 2], 0.88]
    # "," lowers it a step at a time: 0.87 brings instance 3 back.
    page.locator(".sv-canvas").focus()
    page.keyboard.press(",")
    assert page.locator(".sv-count").inner_text() == "3 of 4 shown"
    assert close(pixel(page, *centre(BOXES[2])), shown[3], 2)
    page.keyboard.press(".")
    assert page.locator(".sv-count").inner_text() == "2 of 4 shown"
    page.locator(".sv-threshold").fill("0")
    assert page.locator(".sv-count").inner_text() == "4 of 4 shown"

    # Outline mode (O): the interior is the image again, the edge is painted. (Boxes and box
    # prompts off (B, P): they are drawn along the same edge.)
    page.keyboard.press("b")
    page.keyboard.press("p")
    page.keyboard.press("o")
    assert page.get_by_label("Outline").is_checked()
    x0, y0, x1, y1 = BOXES[0]
    cy = (y0 + y1) / 2
    outline_bare = pixel(page, x0 + 1, cy)
    assert close(pixel(page, *centre(BOXES[0])), bare[1], 2)
    page.keyboard.press("h")
    edge_bare = pixel(page, x0 + 1, cy)
    page.keyboard.press("h")
    assert not close(outline_bare, edge_bare, 8), "the mask's edge is not drawn"
    assert close(outline_bare, blend(edge_bare, TAB10[0], 0.5), 10)
    shot(page, "viewer-outline")
    page.keyboard.press("b")
    page.keyboard.press("p")
    assert page.locator(".sv-boxes").is_checked() and page.locator(".sv-prompts").is_checked()
    page.get_by_label("Filled").check()
    assert page.evaluate("() => sam3Viewer.mode()") == "filled"

    # Another colour for instance 1 repaints it, and the API reports it.
    page.get_by_label("Colour of instance 1").fill("#00ff00")
    assert close(pixel(page, *centre(BOXES[0])), blend(bare[1], (0, 255, 0), 0.5))
    assert page.evaluate("() => sam3Viewer.colours()['1']") == "#00ff00"

    # Opacity: "]" raises it a step, and the overlay follows.
    page.locator(".sv-canvas").focus()
    page.keyboard.press("]")
    assert page.evaluate("() => sam3Viewer.opacity()") == 0.55
    assert page.locator(".sv-opacity-out").inner_text() == "55%"
    assert close(pixel(page, *centre(BOXES[2])), blend(bare[3], TAB10[2], 0.55))
    page.locator(".sv-opacity").fill("1")
    assert close(pixel(page, *centre(BOXES[2])), TAB10[2], 2)
    page.locator(".sv-opacity").fill("0.5")

    # Pointing at an instance, on the canvas (its mask pixels, not its box) or in the list.
    page.mouse.move(*page.evaluate(PAGE_POINT_JS, list(centre(BOXES[2]))))
    readout = page.locator(".sv-readout")
    assert re.search(r"Instance 3 · score 0\.870 · area [\d,]+ px", readout.inner_text())
    assert "is-hot" in page.locator(".sv-list tr[data-number='3']").get_attribute("class")
    # A box corner lies outside the ellipse: nothing there.
    page.mouse.move(*page.evaluate(PAGE_POINT_JS, [BOXES[2][0] + 2, BOXES[2][1] + 2]))
    assert readout.inner_text().startswith("Point at an instance")
    page.locator(".sv-list tr[data-number='4']").hover()
    assert readout.inner_text().startswith("Instance 4 · score 0.830")
    page.mouse.move(0, 0)

    # Keyboard: 1–9 toggle instances, B boxes, S score tags, ? help, Esc closes it.
    page.locator(".sv-canvas").focus()
    page.keyboard.press("4")
    assert not page.get_by_label("Show instance 4").is_checked()
    assert page.evaluate("() => sam3Viewer.visible()") == [1, 2, 3]
    page.keyboard.press("4")
    assert page.evaluate("() => sam3Viewer.visible()") == [1, 2, 3, 4]
    page.keyboard.press("b")
    assert not page.locator(".sv-boxes").is_checked()
    page.keyboard.press("b")
    assert page.locator(".sv-boxes").is_checked()
    page.keyboard.press("s")
    assert not page.locator(".sv-labels").is_checked()
    page.keyboard.press("s")
    page.keyboard.press("?")
    help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    help_dialog.wait_for()
    assert help_dialog.get_by_text("Show or hide instance 1 to 9").is_visible()
    shot(page, "viewer-help")
    page.keyboard.press("Escape")
    assert help_dialog.is_hidden()
    assert page.evaluate("() => document.activeElement.classList.contains('sv-canvas')")

    # Zoom keeps the overlay on the object: the wheel, a drag, arrows, 0 to fit, + and -.
    fit = page.evaluate("() => sam3Viewer.view().scale")
    target = centre(BOXES[3])
    page.mouse.move(*page.evaluate(PAGE_POINT_JS, list(target)))
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"() => sam3Viewer.view().scale > {fit * 2}")
    assert close(pixel(page, *target), shown[4], 3)
    page.mouse.down()
    page.mouse.move(*page.evaluate(PAGE_POINT_JS, [target[0] + 20, target[1] + 15]), steps=4)
    page.mouse.up()
    assert close(pixel(page, *target), shown[4], 3)
    page.keyboard.press("ArrowLeft")
    assert close(pixel(page, *target), shown[4], 3)
    # Panned, toggled, filtered: the same pixels as the view drawn afresh.
    page.keyboard.press("ArrowUp")
    page.keyboard.press("3")
    page.keyboard.press("Shift+ArrowRight")
    page.locator(".sv-threshold").fill("0.9")
    page.locator(".sv-canvas").focus()
    page.keyboard.press("ArrowDown")
    # (Smoothed sampling may differ by a few levels along the edge of a strip painted after a
    # pan: a one-pixel seam, invisible.)
    worst, differing, total = page.evaluate(INCREMENTAL_VS_FULL_JS)
    assert worst <= 4 and differing < 0.01 * total, (worst, differing, total)
    page.locator(".sv-threshold").fill("0")
    page.locator(".sv-canvas").focus()
    page.keyboard.press("3")
    assert page.locator(".sv-zoom-val").inner_text() != f"{round(fit * 100)}%"
    shot(page, "viewer-zoomed")
    page.keyboard.press("0")
    assert page.evaluate("() => sam3Viewer.view().scale") == pytest.approx(fit)
    assert close(pixel(page, *centre(BOXES[0])), blend(bare[1], (0, 255, 0), 0.5))
    page.keyboard.press("+")
    assert page.evaluate("() => sam3Viewer.view().scale") == pytest.approx(fit * 1.25)
    checked = 0
    for n, box in enumerate(BOXES[1:], 2):
        if in_view(page, *centre(box)):
            # (The photo under it is resampled at another scale: a few levels either way.)
            assert close(pixel(page, *centre(box)), shown[n], 8), n
            checked += 1
    assert checked >= 2
    page.get_by_role("button", name="Zoom out").click()
    assert page.evaluate("() => sam3Viewer.view().scale") == pytest.approx(fit)

    frames = page.evaluate("() => sam3Viewer.frameTimes()")
    assert 0 < len(frames) <= 200 and all(t >= 0 for t in frames)
    assert page.locator(".sam3-viewer").get_attribute("data-frame-ms") is not None
    assert page_errors == []


def test_the_viewer_starts_when_the_run_finishes_on_an_open_page_and_fits_a_phone(
    page, page_errors, standin, live_server, owner
) -> None:
    """The page is open while the run is at Runflow: the viewer appears with the htmx swap
    that brings the masks, without a reload. Then a phone's width."""
    standin.complete_after = 0.1
    client = Client()
    client.force_login(owner)
    run = submit(client, **box_form())
    page.goto(f"{live_server.url}/runs/{run.id}/")
    assert page.locator(".sam3-viewer").count() == 0
    drain(settled(run))
    page.get_by_text("4 instances found").wait_for(timeout=20_000)
    viewer_ready(page)
    assert page.locator(".overlay-wrap").is_hidden()
    assert page.locator(".sv-count").inner_text() == "4 of 4 shown"
    coloured = pixel(page, *centre(BOXES[0]))
    page.locator(".sv-canvas").focus()
    page.keyboard.press("1")
    bare = pixel(page, *centre(BOXES[0]))
    assert close(coloured, blend(bare, TAB10[0], 0.5))
    page.keyboard.press("1")
    assert serious(page, ".sam3-viewer") == []

    # The export card follows the view ("Only what I see"): instance 2 hidden, colours, opacity.
    page.get_by_label("Only what I see").check()
    page.locator(".sv-canvas").focus()
    page.keyboard.press("2")
    page.get_by_label("Colour of instance 3").fill("#000000")
    zip_link = page.get_by_role("link", name="ZIP of masks")
    href = zip_link.get_attribute("href")
    assert "visible=1,3,4" in href and "3:000000" in href, href
    assert "opacity=0.5" in href
    page.locator(".sv-canvas").focus()
    page.keyboard.press("2")
    assert "visible=1,2,3,4" in zip_link.get_attribute("href")

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function("() => sam3Viewer.view().scale < 0.7")
    width = page.evaluate(
        "() => { const r = document.querySelector('.sam3-viewer');"
        " return [r.scrollWidth, r.clientWidth, r.getBoundingClientRect().right]; }"
    )
    assert width[0] <= width[1] and width[2] <= 390
    assert close(pixel(page, *centre(BOXES[0])), coloured, 8)
    page.locator(".sam3-viewer").scroll_into_view_if_needed()
    page.screenshot(path=str(_shot_path("viewer-phone")), full_page=False)
    shot(page, "viewer-phone-full")
    assert serious(page, ".sam3-viewer") == []
    assert page_errors == []


def test_a_large_photo_stays_aligned_at_every_zoom(page, live_server, owner) -> None:
    """A 4032×3024 photo: the viewer draws from reduced copies when zoomed out and from full
    resolution when zoomed in; the overlay is on the object either way."""
    image = stored_image("large-4032x3024.jpg")
    run = Run.objects.create(
        owner=owner,
        image=image,
        input={"prompt": "thing"},
        status=Run.Status.SUCCEEDED,
        artifacts=Run.Artifacts.DONE,
    )
    boxes = [(400, 300, 1400, 1100), (2000, 1500, 2600, 2300), (3000, 200, 3900, 900)]
    for index, (a, b, c, d) in enumerate(boxes):
        mask = Image.new("1", (4032, 3024), 0)
        ImageDraw.Draw(mask).ellipse((a, b, c - 1, d - 1), fill=255)
        buf = io.BytesIO()
        mask.save(buf, "PNG")
        row = Mask(run=run, index=index, score=0.9, x_min=a, y_min=b, x_max=c, y_max=d)
        row.area = mask.histogram()[255]
        row.copied_at = timezone.now()
        row.file.save(f"{run.pk}-{index}.png", ContentFile(buf.getvalue()), save=False)
        row.save()
    assert (image.display.name or "").endswith(".webp")  # 2016×1512, made at intake
    page.goto(f"{live_server.url}/runs/{run.id}/")
    viewer_ready(page)
    assert page.evaluate("() => sam3Viewer.view().scale") < 0.25  # a reduced copy is drawn
    # The page and the viewer loaded the display copy, not the 12 MP original.
    assert page.evaluate(IMAGES_LOADED_JS) == [f"/images/{image.pk}/display/"]
    coloured = [pixel(page, *centre(b)) for b in boxes]
    page.locator(".sv-canvas").focus()
    page.keyboard.press("h")
    bare = [pixel(page, *centre(b)) for b in boxes]
    page.keyboard.press("h")
    for n in range(3):
        assert close(coloured[n], blend(bare[n], TAB10[n], 0.5), 8), n
    # Zoomed in to full resolution, the overlay's edge is the mask's: just inside the ellipse
    # is coloured, just outside is the image.
    inside, outside = (402, 700), (398, 700)
    page.mouse.move(*page.evaluate(PAGE_POINT_JS, [400, 700]))
    for _ in range(30):
        page.mouse.wheel(0, -200)
    page.wait_for_function("() => sam3Viewer.view().scale >= 4")
    # Past the copy's detail, the original is loaded and drawn in its place.
    page.locator(".sam3-viewer[data-full=done]").wait_for()
    assert page.evaluate(IMAGES_LOADED_JS) == [
        f"/images/{image.pk}/display/",
        f"/images/{image.pk}/",
    ]
    page.mouse.move(0, 0)
    over_in, over_out = pixel(page, *inside), pixel(page, *outside)
    page.keyboard.press("h")
    bare_in, bare_out = pixel(page, *inside), pixel(page, *outside)
    page.keyboard.press("h")
    assert close(over_in, blend(bare_in, TAB10[0], 0.5), 4)
    assert close(over_out, bare_out, 2)
    page.keyboard.press("0")
    for _ in range(4):
        page.keyboard.press("+")
    assert in_view(page, *centre(boxes[1]))
    assert close(pixel(page, *centre(boxes[1])), coloured[1], 10)
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    assert in_view(page, *centre(boxes[1]))
    assert close(pixel(page, *centre(boxes[1])), coloured[1], 10)
    page.keyboard.press("2")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("2")
    worst, differing, total = page.evaluate(INCREMENTAL_VS_FULL_JS)
    assert worst <= 4 and differing < 0.01 * total, (worst, differing, total)
    shot(page, "viewer-large-zoomed")
    # Only crops were fetched for the masks: each far smaller than the full-size mask.
    sizes = page.evaluate(
        """() => performance.getEntriesByType('resource')
          .filter((e) => e.name.includes('.crop.png')).map((e) => e.decodedBodySize)"""
    )
    assert len(sizes) == 3


def _shot_path(name: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS / f"{name}.png"
