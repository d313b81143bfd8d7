"""What a person clicks, in Debian's Chromium driven by Playwright: the live app, a real
worker process and the Runflow stand-in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from segmentation.models import Run
from tests.browser.helpers import shot
from tests.factories import worker_env
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
    # Reading the request body while the page keeps polling: it stays open.
    page.get_by_text("Request body").click()
    page.wait_for_timeout(2500)
    assert page.locator("#run-status details").first.evaluate("d => d.open")
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
        # The server-made overlay is there for the no-JavaScript view, at the image's size
        # (fetched here: the page loads it lazily, and not at all once the viewer runs).
        src = page.locator("img.masks").get_attribute("src")
        overlay = page.request.get(f"{live_server.url}{src}")
        assert overlay.ok and overlay.headers["content-type"] == "image/png"
        assert int.from_bytes(overlay.body()[16:20], "big") == 384  # PNG IHDR width
        assert page.locator("table.instances tbody tr").count() == 2
        assert page.locator("svg rect.found").count() == 2  # in the no-JavaScript overlay
        run = Run.objects.get()
        assert run.result_source == "callback"
        assert run.deliveries.get().outcome == "applied"
        assert page.get_by_text("Callback deliveries").count() == 1
        shot(page, "06-run-succeeded")
    finally:
        proc.terminate()
        proc.wait(10)
