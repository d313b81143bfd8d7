"""What the browser tests share: one Chromium for the whole run (Debian's, through Playwright),
a real worker process beside the live app, and a page signed in as the owner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.helpers import CHROMIUM, sign_in
from tests.factories import worker_env
from tests.sample_images import ROOT


@pytest.hookimpl(tryfirst=True)  # before -m browser / -m 'not browser' selects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here drives Chromium: marked so, and skipped where there is none."""
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)
            item.add_marker(
                pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
            )


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the tests' own ORM calls
    # are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def worker(standin: Any, transactional_db: Any) -> Iterator[subprocess.Popen[bytes]]:
    """The real database worker, as bin/serve runs it, in a process of its own."""
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "worker", "--", "--no-startup-delay", "--interval", "0.1"],
        cwd=ROOT,
        env=worker_env(standin),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield proc
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def page(browser: Any, live_server: Any, owner: Any) -> Iterator[Any]:
    """A new browser window, signed in as the owner through the sign-in form."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, f"{live_server.url}/runs/new/")
    yield page
    context.close()


@pytest.fixture
def page_errors(page: Any) -> list[str]:
    """Uncaught errors, console errors and warnings on the page: none is expected (except
    Chromium's hint about the tests' own pixel readbacks)."""
    errors: list[str] = []

    def console(message: Any) -> None:
        if message.type in ("error", "warning") and "readback" not in message.text:
            errors.append(message.text)

    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", console)
    return errors


@pytest.fixture(autouse=True)
def short_long_polls(settings: Any) -> None:
    """A run page's long poll holds a thread of the live server until it ends: short ones,
    so a test's last page does not keep asking into the next test."""
    settings.SAM3WEB_LIVE_WAIT = 2
