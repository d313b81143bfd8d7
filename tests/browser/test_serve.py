"""bin/serve as a newcomer runs it: `bin/serve --demo` starts the app, its worker and the
Runflow stand-in; every page says the results are simulated; a first run shows its masks; and
Ctrl+C stops it all in a couple of seconds, even with a run in flight and its page waiting."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.sample_images import IMAGES, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "serve.log"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "DEMO_STANDIN_PORT": str(free_port()),
            "SAM3WEB_DATA_DIR": str(tmp / "data"),
            "SAM3WEB_STATIC_MANIFEST": "0",
            **env,
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        # In a session of its own, like a terminal's foreground job: Ctrl+C is a SIGINT to
        # the whole group.
        self.proc = subprocess.Popen(
            ["bin/serve", "--demo"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.url}/accounts/login/", timeout=2).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.3)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_line(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + 30
        while not (found := re.search(pattern, self.output())):
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.1)
        return found

    def manage(self, *args: str, **env: str) -> str:
        done = subprocess.run(
            [".venv/bin/python", "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def ctrl_c(self) -> float:
        began = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(30)
        return time.monotonic() - began


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    app = Served(tmp_path, DEMO_RUN_SECONDS="1.5")
    yield app
    if app.proc.poll() is None:
        os.killpg(app.proc.pid, signal.SIGKILL)
        app.proc.wait(10)


def test_the_demo_segments_at_once_and_ctrl_c_stops_it_cleanly(served: Served, browser: Any):
    # The terminal says how to become the first admin: the setup code.
    code = served.wait_for_line(r"Setup code: ([A-Z0-9-]+) \(enter it at /setup/")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{served.url}/")
    page.wait_for_url("**/setup/")
    assert "Demo: simulated results" in page.locator("body").inner_text()
    page.get_by_label("Setup code").fill(code.group(1))
    page.get_by_label("Username").fill("newcomer")
    page.get_by_label("Password", exact=True).fill("a long demo password")
    page.get_by_label("Password again").fill("a long demo password")
    page.get_by_role("button", name="Create admin account").click()
    page.goto(f"{served.url}/runs/new/")
    assert "Demo: simulated results" in page.locator("body").inner_text()
    page.get_by_label("Image", exact=True).set_input_files(str(IMAGES / "coins.png"))
    page.get_by_label("Text prompt").fill("coin")
    page.get_by_role("button", name="Submit run").click()
    # The stand-in calls the app back; the page shows the masks without a reload.
    page.get_by_text(re.compile(r"\d+ instances? found")).wait_for()

    # A second run still at the stand-in, its page waiting for news: Ctrl+C now.
    page.goto(f"{served.url}/runs/new/")
    page.get_by_label("Image", exact=True).set_input_files(str(IMAGES / "cat.jpg"))
    page.get_by_label("Text prompt").fill("cat")
    page.get_by_role("button", name="Submit run").click()
    page.wait_for_url("**/runs/*/")
    seconds = served.ctrl_c()
    context.close()
    output = served.output()
    assert served.proc.returncode == 0, output
    assert seconds < 5, output
    assert "SIGKILL" not in output and "Traceback" not in output, output
    assert output.rstrip().endswith("Stopped."), output


def test_workers_2_starts_two_workers_that_both_beat(tmp_path: Path) -> None:
    app = Served(tmp_path, WORKERS="2")
    try:
        count = "from segmentation.models import WorkerHeartbeat as W; print(W.objects.count())"
        deadline = time.monotonic() + 30
        while app.manage("shell", "-c", count).split()[-1] != "2":
            assert time.monotonic() < deadline, app.output()
            time.sleep(0.3)
        assert len(re.findall(r"Starting worker worker_id=", app.output())) == 2, app.output()
        assert app.ctrl_c() < 5
        assert app.proc.returncode == 0, app.output()
        # A clean stop takes each worker's heartbeat row with it.
        assert app.manage("shell", "-c", count).split()[-1] == "0"
    finally:
        if app.proc.poll() is None:
            os.killpg(app.proc.pid, signal.SIGKILL)
            app.proc.wait(10)


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_a_workers_value_that_is_not_a_positive_number_is_refused(value: str) -> None:
    done = subprocess.run(
        ["bin/serve"],
        cwd=ROOT,
        env={**os.environ, "WORKERS": value},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f'WORKERS must be a whole number of worker processes, 1 or more (got "{value}")' in (
        done.stderr
    )
