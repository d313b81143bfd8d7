"""The run page learns of the result by a long poll (static/sam3web/live.js), and falls back to
htmx's one-second poll when that fails; the time a run has taken ticks while it is under way."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from segmentation.models import Run
from tests.browser.helpers import shot
from tests.factories import worker_env
from tests.sample_images import IMAGES, ROOT

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def calling_back(standin: Any, live_server: Any, settings: Any) -> Iterator[None]:
    """Runflow calls back (a public URL is set), a worker beside the app."""
    settings.SAM3WEB_PUBLIC_URL = live_server.url
    settings.SAM3WEB_LIVE_WAIT = 5
    standin.complete_after = 0.5
    standin.callback_backoff = (0.1, 0.1)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "worker", "--", "--no-startup-delay"],
        cwd=ROOT,
        env=worker_env(standin, SAM3WEB_PUBLIC_URL=live_server.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield
    proc.terminate()
    proc.wait(10)


def status_requests(page: Any) -> list[str]:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/status/" in r.url else None)
    return asked


def submit_coins(page: Any) -> None:
    page.get_by_label("Image", exact=True).set_input_files(str(IMAGES / "coins.png"))
    page.get_by_label("Text prompt").fill("coin")
    page.get_by_role("button", name="Submit run").click()
    page.wait_for_url("**/runs/*/")


def test_the_result_arrives_by_long_poll(page, calling_back, page_errors) -> None:
    asked = status_requests(page)
    submit_coins(page)
    page.get_by_text(re.compile(r"\d+ instances? found")).wait_for(timeout=30_000)
    assert any("wait=1" in url for url in asked)
    # htmx's one-second poll was held back the whole time: the long poll did the work.
    assert [url for url in asked if "wait=1" not in url] == []
    assert Run.objects.get().status == Run.Status.SUCCEEDED
    assert page_errors == []


def test_a_dropped_long_poll_falls_back_to_polling(page, calling_back) -> None:
    # A proxy that cuts long requests, or the connection dropping mid-run.
    page.route(re.compile(r".*/status/\?.*wait=1.*"), lambda route: route.abort())
    asked = status_requests(page)
    submit_coins(page)
    page.get_by_text(re.compile(r"\d+ instances? found")).wait_for(timeout=30_000)
    assert any("wait=1" not in url for url in asked)  # htmx's poll took over
    assert Run.objects.get().status == Run.Status.SUCCEEDED


def test_the_time_taken_ticks_while_the_run_is_under_way(page, worker, standin) -> None:
    standin.complete_after = None  # Runflow never finishes it
    submit_coins(page)
    page.get_by_text("Queued at Runflow").wait_for()
    elapsed = page.locator("[data-elapsed-since]")
    page.wait_for_function(
        "() => parseInt(document.querySelector('[data-elapsed-since]').textContent) >= 2"
    )
    assert re.fullmatch(r"\d+ s", elapsed.inner_text())
    shot(page, "run-under-way")
