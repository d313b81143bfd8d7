"""What a person clicks, in Debian's Chromium driven by Playwright: the live app, a real
worker process and the Runflow stand-in."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.files.base import ContentFile

from segmentation.imaging.render import colour_for, render_overlay
from segmentation.models import Run
from tests.browser.helpers import (
    SHOTS,
    TAB10,
    centre,
    close,
    pixel,
    shot,
    sign_in,
    viewer_ready,
)
from tests.factories import OPTIONS, add_masks, ellipse, make_run, wait_for, worker_env
from tests.sample_images import IMAGES, ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def test_submit_a_run_and_watch_it_reach_runflow(page, worker, standin, live_server) -> None:
    page.get_by_label("Image", exact=True).set_input_files(str(IMAGES / "cat.jpg"))
    page.get_by_label("Text prompt").fill("cat")
    page.get_by_text("Edit as JSON").click()  # folded while the editor draws
    page.get_by_label("Point prompts").fill('[{"x": 225, "y": 150, "label": 1}]')
    page.get_by_label("Box prompts").fill(
        '[{"x_min": 60, "y_min": 30, "x_max": 400, "y_max": 290}]'
    )
    shot(page, "01-new-run")
    page.get_by_role("button", name="Submit run").click()
    page.wait_for_url("**/runs/*/")
    # The status updates live, without a reload, once the worker has submitted it.
    page.get_by_text("Queued at Runflow").wait_for()
    run = Run.objects.get()
    assert run.status == Run.Status.QUEUED
    assert len(standin.runs) == 1
    assert page.locator("svg circle.pt.pos").count() == 1
    assert page.locator("svg rect.box").count() == 1
    # Reading the request body, under Details, while the page keeps polling: it stays open.
    page.get_by_text("Details", exact=True).click()
    page.get_by_text("Request body").click()
    page.wait_for_timeout(2500)
    assert page.locator("#run-request-body").evaluate("d => d.open")
    shot(page, "02-run-queued")

    page.get_by_role("link", name="History").click()
    assert page.get_by_role("link", name="cat").count() >= 1
    shot(page, "03-history")


def test_a_bad_field_keeps_everything_typed(page, worker, standin) -> None:
    page.get_by_label("Image", exact=True).set_input_files(str(IMAGES / "coffee.jpg"))
    page.get_by_label("Text prompt").fill("cup")
    page.get_by_text("Edit as JSON").click()  # folded while the editor draws
    page.get_by_label("Point prompts").fill('[{"x": 9000, "y": 1, "label": 1}]')
    page.get_by_role("button", name="Submit run").click()
    error = page.locator("#field-point_prompts .field-errors")
    error.wait_for()
    assert "outside the image" in error.inner_text()
    assert page.get_by_label("Text prompt").input_value() == "cup"
    assert page.get_by_text("Using coffee.jpg").count() == 1
    shot(page, "04-form-error")

    page.get_by_label("Point prompts").fill('[{"x": 300, "y": 200, "label": 1}]')
    page.get_by_role("button", name="Submit run").click()
    page.get_by_text("Queued at Runflow").wait_for()
    assert Run.objects.get().image.original_name == "coffee.jpg"


def test_a_refused_run_can_be_submitted_again(page, worker, standin, settings) -> None:
    standin.scripted.append(
        (402, {"code": "INSUFFICIENT_CREDIT", "message": "Top up your balance", "errors": None})
    )
    page.get_by_label("Image", exact=True).set_input_files(str(IMAGES / "rocket.webp"))
    page.get_by_label("Text prompt").fill("rocket")
    page.get_by_role("button", name="Submit run").click()
    page.get_by_text("Top up your balance").wait_for()
    shot(page, "05-refused")
    page.get_by_role("button", name="Submit again").click()
    page.get_by_text("Queued at Runflow").wait_for()
    assert len(standin.runs) == 1


def test_a_finished_run_shows_its_masks(page, standin, live_server, settings) -> None:
    """Runflow finishes and calls back (a public URL is set): the page shows the masks
    without a reload, each in its colour, with score and box."""
    settings.SAM3WEB_PUBLIC_URL = live_server.url
    standin.complete_after = 0.5
    standin.callback_backoff = (0.1, 0.1)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "worker", "--", "--no-startup-delay", "--interval", "0.1"],
        cwd=ROOT,
        env=worker_env(standin, SAM3WEB_PUBLIC_URL=live_server.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page.get_by_label("Image", exact=True).set_input_files(str(IMAGES / "coins.png"))
        page.get_by_label("Text prompt").fill("coin")
        page.get_by_text("Edit as JSON").click()  # folded while the editor draws
        page.get_by_label("Box prompts").fill(
            '[{"x_min": 20, "y_min": 20, "x_max": 120, "y_max": 110},'
            ' {"x_min": 200, "y_min": 150, "x_max": 330, "y_max": 270}]'
        )
        page.get_by_label("Return multiple masks").check()
        page.get_by_role("button", name="Submit run").click()
        page.get_by_text("2 instances found").wait_for(timeout=30_000)
        # The server-made overlay, for the no-JavaScript view, is drawn once the masks show:
        # a page loaded after that names it, at the image's size (fetched here: the page names
        # it in <noscript>, so a browser that runs the viewer never loads it).
        wait_for(lambda: Run.objects.get().overlay, timeout=30)
        page.reload()
        page.get_by_text("2 instances found").wait_for()
        src = page.locator(".overlay-wrap").get_attribute("data-overlay")
        assert src, "the page does not name the overlay"
        overlay = page.request.get(f"{live_server.url}{src}")
        assert overlay.ok and overlay.headers["content-type"] == "image/png"
        assert int.from_bytes(overlay.body()[16:20], "big") == 384  # PNG IHDR width
        assert page.locator("img.masks").is_hidden()
        loaded = page.evaluate(
            "() => performance.getEntriesByType('resource').map((e) => e.name).join(' ')"
        )
        assert "overlay.png" not in loaded and "/display/" in loaded
        assert page.locator("table.instances tbody tr").count() == 2
        assert page.locator("svg rect.found").count() == 2  # in the no-JavaScript overlay
        run = Run.objects.get()
        assert run.result_source == "callback"
        assert run.deliveries.get().outcome == "applied"
        page.get_by_text("Details", exact=True).click()
        assert page.get_by_role("heading", name="Callback deliveries").is_visible()
        shot(page, "06-run-succeeded")
    finally:
        proc.terminate()
        proc.wait(10)


# --- the page as a person reads it: the result first, one list, details folded ------------------

# A grid of 24 small objects on coffee.jpg (600×400): more rows than the list shows at once.
GRID = [(x, y, x + 70, y + 60) for y in (20, 115, 210, 305) for x in range(20, 500, 95)]
PHONE = {"width": 390, "height": 844}

# Where image point (x, y) is on the page, in CSS pixels (for the mouse).
PAGE_POINT_JS = """([x, y]) => {
  const v = window.sam3Viewer.view();
  const r = document.querySelector(".sam3-viewer .sv-canvas").getBoundingClientRect();
  return [r.left + x * v.scale + v.tx, r.top + y * v.scale + v.ty];
}"""


def grid_run(owner, boxes=GRID, **fields) -> Run:
    """A finished run on coffee.jpg with an ellipse in each box, scored 0.99, 0.98, ..."""
    run = make_run(
        owner,
        image="coffee.jpg",
        input={"prompt": "things", **OPTIONS},
        artifacts=Run.Artifacts.DONE,
        provider_run_id="run_7f3a9c",
        duration_ms=1834,
        **fields,
    )
    masks = add_masks(
        run,
        [(ellipse((a, b, c - 1, d - 1), (600, 400)), (a, b, c, d)) for a, b, c, d in boxes],
        score=lambda i: round(0.99 - i / 100, 2),
    )
    # The server's composite, as the copy task draws it.
    pngs = [(m.file.read(), colour_for(m.index)) for m in masks]
    run.overlay.save(f"{run.pk}-overlay.png", ContentFile(render_overlay(pngs, 600, 400)))
    return run


def box_of(page, selector: str) -> dict:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box


def first_screen(page, name: str) -> None:
    """What the window shows before any scrolling."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def test_the_result_comes_first_with_one_list_and_the_details_folded(
    page, page_errors, live_server, owner
) -> None:
    run = grid_run(owner, boxes=GRID[:6])
    page.goto(f"{live_server.url}/runs/{run.id}/")
    viewer_ready(page)
    first_screen(page, "run-desktop-first-screen")
    shot(page, "run-desktop")

    # The status and its actions at the top, compact: one line above the image.
    status, canvas = box_of(page, "#run-status"), box_of(page, ".sv-canvas")
    assert page.get_by_text("6 instances found.").is_visible()
    assert status["height"] < 90 and status["y"] + status["height"] <= canvas["y"]
    for name in ("Edit as a new run", "Same image, new prompt", "Same prompts on other images"):
        assert page.get_by_role("link", name=name).is_visible(), name
    assert page.get_by_role("link", name="Delete…").is_visible()
    # The image with its masks and the controls on the first screen, the list beside it.
    assert canvas["y"] + canvas["height"] <= 900
    instances = box_of(page, ".instances-card")
    assert instances["x"] > canvas["x"] + canvas["width"] and instances["y"] < canvas["y"]

    # One list of instances, the live one: its rows are the server's, taken over.
    assert page.locator("table").count() == 1  # the deliveries' table is not there (no callbacks)
    rows = page.locator("table.instances tbody tr")
    assert rows.count() == 6
    for n, (a, b, c, d) in enumerate(GRID[:6], 1):
        row = page.locator(f"table.instances tr[data-number='{n}']")
        assert row.locator(".sv-box").inner_text() == f"[{a}, {b}, {c}, {d}]"
        link = row.get_by_role("link", name=f"PNG of mask {n}")
        assert link.get_attribute("href") == f"/runs/{run.id}/masks/{n}.png"
        assert row.get_by_label(f"Show instance {n}").is_checked()
    png = page.request.get(f"{live_server.url}/runs/{run.id}/masks/3.png")
    assert png.ok and png.headers["content-type"] == "image/png"
    # It follows hide and the minimum score.
    page.get_by_label("Show instance 2").uncheck()
    assert "is-off" in rows.nth(1).get_attribute("class")
    page.locator(".sv-threshold").fill("0.96")
    assert page.locator("table.instances tr.is-below").count() == 2  # 0.95 and 0.94
    assert page.locator(".sv-count").inner_text() == "3 of 6 shown"  # 1, 3 and 4
    page.locator(".sv-threshold").fill("0")

    # Ids, timings, cost, what was sent: under Details, folded.
    details = page.locator("#run-details")
    assert not details.evaluate("d => d.open")
    for text in (str(run.id), "run_7f3a9c", "Runflow took"):
        assert not page.get_by_text(text).first.is_visible(), text
    assert page.get_by_role("heading", name="What was sent").is_hidden()
    assert box_of(page, "#run-details")["y"] > canvas["y"] + canvas["height"]
    page.get_by_text("Details", exact=True).click()
    for text in (str(run.id), "run_7f3a9c", "1834 ms"):
        assert page.get_by_text(text).first.is_visible(), text
    assert page.get_by_role("heading", name="What was sent").is_visible()
    assert page.get_by_text("Cost", exact=True).is_visible()
    shot(page, "run-desktop-details")
    assert page_errors == []


def test_pointing_at_a_mask_reads_it_and_clicking_selects_it_in_the_list(
    page, page_errors, live_server, owner
) -> None:
    run = grid_run(owner)
    page.goto(f"{live_server.url}/runs/{run.id}/")
    viewer_ready(page)
    tip = page.locator(".sv-tip")
    assert tip.is_hidden()

    # Hover: a label beside the pointer with the score and area (pixels and % of the image).
    x, y = page.evaluate(PAGE_POINT_JS, list(centre(GRID[7])))
    page.mouse.move(x, y)
    tip.wait_for()
    area = run.masks.get(index=7).area
    assert area is not None
    assert tip.inner_text().split() == (
        f"#8 score 0.920 {area:,} px · {100 * area / (600 * 400):.2f}% of the image".split()
    )
    near = box_of(page, ".sv-tip")
    assert 0 < near["x"] - x < 40 and 0 < near["y"] - y < 40  # beside the pointer
    # It follows the pointer, and stays inside the image where there is no room beside it.
    x, y = page.evaluate(PAGE_POINT_JS, list(centre(GRID[23])))
    page.mouse.move(x, y)
    page.wait_for_function("() => document.querySelector('.sv-tip').textContent.startsWith('#24')")
    canvas, near = box_of(page, ".sv-canvas"), box_of(page, ".sv-tip")
    assert near["x"] + near["width"] <= canvas["x"] + canvas["width"]
    assert near["y"] + near["height"] <= canvas["y"] + canvas["height"]
    assert near["x"] + near["width"] <= x  # to the left of the pointer
    page.mouse.move(*page.evaluate(PAGE_POINT_JS, [5, 395]))  # between the objects
    tip.wait_for(state="hidden")

    # A click on an instance selects it in the list: highlighted, scrolled into view there.
    wrap = page.locator(".instances-card .sv-list-wrap")
    assert wrap.evaluate("w => w.scrollHeight > w.clientHeight")  # 24 rows: it scrolls
    assert wrap.evaluate("w => w.scrollTop") == 0
    page.mouse.click(*page.evaluate(PAGE_POINT_JS, list(centre(GRID[22]))))
    row = page.locator("table.instances tr[data-number='23']")
    assert "is-selected" in row.get_attribute("class")
    assert (
        row.get_by_role("button", name="Select instance 23").get_attribute("aria-pressed") == "true"
    )
    outline = row.evaluate("r => getComputedStyle(r).outlineStyle")
    assert outline == "solid"  # marked as the focus is marked
    r, w = (
        box_of(page, "table.instances tr[data-number='23']"),
        box_of(page, ".instances-card .sv-list-wrap"),
    )
    assert w["y"] <= r["y"] and r["y"] + r["height"] <= w["y"] + w["height"] + 1
    assert "Instance 23 (selected)" in page.locator(".sv-readout").inner_text()
    assert page.evaluate("() => window.scrollY") == 0  # the page itself did not move
    shot(page, "run-selected-from-image")
    # A click between the objects clears the selection.
    page.mouse.click(*page.evaluate(PAGE_POINT_JS, [5, 395]))
    assert page.locator("table.instances tr.is-selected").count() == 0

    # A click on a row highlights its instance on the image: its edge at full strength (boxes
    # off, as they are drawn along the same edge).
    page.get_by_role("checkbox", name="Boxes").uncheck()
    a, b, c, d = GRID[1]
    edge = (a + 1, (b + d) / 2)
    page.mouse.move(0, 0)
    before = pixel(page, *edge)
    page.locator("table.instances tr[data-number='2'] .sv-score").click()
    page.mouse.move(0, 0)  # not hovering it any more: the selection alone lights it
    assert "is-selected" in page.locator("table.instances tr[data-number='2']").get_attribute(
        "class"
    )
    lit = pixel(page, *edge)
    assert close(lit, TAB10[1], 40) and not close(lit, before, 20), (lit, before)
    page.get_by_role("checkbox", name="Boxes").check()

    # The keyboard, through the list: the select buttons, ↑ and ↓, and Esc on the image.
    page.get_by_role("button", name="Select instance 5").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.querySelector('tr.is-selected').dataset.number") == "5"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("() => document.activeElement.closest('tr').dataset.number") == "6"
    assert page.evaluate("() => document.querySelector('tr.is-selected').dataset.number") == "6"
    assert page.evaluate("() => document.activeElement.matches(':focus-visible')")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    assert page.evaluate("() => document.querySelector('tr.is-selected').dataset.number") == "4"
    assert "Selected: Instance 4" in page.locator(".sv-announce").inner_text()
    page.keyboard.press("Enter")  # pressed again: unselected
    assert page.locator("table.instances tr.is-selected").count() == 0
    page.keyboard.press("ArrowDown")
    page.locator(".sv-canvas").focus()
    page.keyboard.press("Escape")
    assert page.locator("table.instances tr.is-selected").count() == 0
    assert page_errors == []


def test_on_a_phone_the_result_is_on_the_first_screen_under_a_compact_bar(
    page, page_errors, live_server, owner
) -> None:
    run = grid_run(owner, boxes=GRID[:8])
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/runs/{run.id}/")
    viewer_ready(page)
    first_screen(page, "run-phone-first-screen")
    shot(page, "run-phone")
    canvas = box_of(page, ".sv-canvas")
    assert page.evaluate("() => window.scrollY") == 0
    assert canvas["y"] >= 0 and canvas["y"] + canvas["height"] <= PHONE["height"]
    assert canvas["width"] >= 350  # nearly the whole width
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]

    # The top bar: the brand and a menu button; the links are in the menu.
    bar = box_of(page, "header.topbar")
    assert bar["height"] <= 56
    history = page.get_by_role("link", name="History")
    assert history.is_hidden()
    page.get_by_text("Menu", exact=True).click()
    history.wait_for()
    assert page.get_by_role("button", name="Sign out").is_visible()
    shot(page, "run-phone-menu")
    page.get_by_text("Menu", exact=True).click()
    assert history.is_hidden()

    # The less frequent actions are a menu too; the first ones stay in sight.
    assert page.get_by_role("link", name="Edit as a new run").is_visible()
    other = page.get_by_role("link", name="Same prompts on other images")
    assert other.is_hidden()
    page.get_by_text("More actions").click()
    other.wait_for()
    shot(page, "run-phone-actions")
    other.click()
    page.wait_for_url(f"**/runs/{run.id}/reuse/")
    assert page_errors == []


def test_without_javascript_the_page_is_a_picture_and_a_plain_list(
    browser, live_server, owner
) -> None:
    run = grid_run(owner, boxes=GRID[:3])
    context = browser.new_context(java_script_enabled=False, viewport=PHONE)
    try:
        page = context.new_page()
        sign_in(page, f"{live_server.url}/runs/{run.id}/")
        # The server's composite, with its mask layer, and the list with each mask's PNG.
        assert page.locator(".sam3-viewer").is_hidden()
        assert page.locator("img.masks").is_visible()
        assert page.locator("table.instances tbody tr").count() == 3
        assert page.locator("table.instances input").count() == 0
        assert page.get_by_role("link", name="PNG of mask 3").is_visible()
        # The menus and the details open without scripts.
        page.get_by_text("Menu", exact=True).click()
        assert page.get_by_role("link", name="History").is_visible()
        page.get_by_text("Details", exact=True).click()
        assert page.get_by_text(str(run.id)).is_visible()
        shot(page, "run-phone-no-javascript")
    finally:
        context.close()


def test_a_run_in_progress_and_a_failed_run_keep_their_status_up_top(
    page, page_errors, live_server, owner
) -> None:
    """Screenshots at both sizes; the run in progress updates in place, and an opened Details
    stays open through the update."""
    running = make_run(
        owner, image="coffee.jpg", status=Run.Status.RUNNING, provider_run_id="run_1"
    )
    failed = make_run(
        owner,
        image="coffee.jpg",
        status=Run.Status.FAILED,
        failure_code="MODEL_ERROR",
        failure_stage="inference",
        failure_message="SAM 3 ran out of memory on this image.",
    )
    for size, name in (({"width": 1280, "height": 900}, "desktop"), (PHONE, "phone")):
        page.set_viewport_size(size)
        page.goto(f"{live_server.url}/runs/{failed.id}/")
        refusal = page.get_by_role("alert")
        assert "SAM 3 ran out of memory" in refusal.inner_text() and refusal.is_visible()
        assert box_of(page, ".refusal")["y"] < box_of(page, ".stage")["y"]
        assert page.get_by_role("button", name="Submit again").count() == 0
        shot(page, f"run-failed-{name}")
        page.goto(f"{live_server.url}/runs/{running.id}/")
        assert page.get_by_text("SAM 3 is working on it.").is_visible()
        stage = box_of(page, ".stage .overlay-wrap")
        assert stage["y"] + stage["height"] <= size["height"]
        shot(page, f"run-running-{name}")

    page.get_by_text("Details", exact=True).click()
    page.get_by_text("Request body").count()  # (no body: the run was made here, not sent)
    Run.objects.filter(pk=running.pk).update(status=Run.Status.FAILED, failure_message="Gone.")
    page.get_by_text("Runflow could not complete this run.").wait_for()
    assert page.locator("#run-details").evaluate("d => d.open")
    assert page.get_by_role("alert").inner_text().strip() == "Gone."
    assert page_errors == []
