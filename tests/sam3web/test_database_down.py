"""PostgreSQL stopped under a running app: every request gets a clean 503 that says why and
when to come back (a page, an API answer in its JSON shape, /healthz naming the database), none
hangs, none is a 500; and once the database is back the very next requests work, without
restarting anything."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.factories import start_gunicorn
from tests.postgres_server import PostgresServer, binaries
from tests.sample_images import ROOT


class Restartable(PostgresServer):
    """A throwaway server that can also be stopped and started again, keeping its data."""

    def options(self) -> str:
        return f"-c listen_addresses='' -c unix_socket_directories={self.root} -c fsync=off"

    def halt(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        log = str(self.root / "server.log")
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", self.options(),
            "-w", "start",
        )  # fmt: skip


@pytest.fixture
def app(tmp_path: Any) -> Iterator[tuple[str, Restartable]]:
    """The app under gunicorn on a PostgreSQL of the test's own: (base URL, that server)."""
    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (bin/setup --dev installs it)")
    server = Restartable()
    server.start()
    env = {
        **__import__("os").environ,
        "DATABASE_URL": server.url,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "SAM3WEB_STATIC_MANIFEST": "0",
        "SAM3WEB_HEALTH_TIMEOUT": "2",
    }
    proc = None
    try:
        server.migrate(env, ROOT)
        proc, url = start_gunicorn(env, workers=1, threads=4, ready_path="/healthz")
        yield url, server
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        server.stop()


def requests(url: str) -> dict[str, httpx.Response]:
    """A signed-in person's page (a session cookie: loading it reads the database), an API call
    (its token is looked up), and the load balancer's check."""
    cookies = {"sessionid": "a-session-the-database-keeps"}
    with httpx.Client(base_url=url, timeout=10, cookies=cookies) as http:
        return {
            "page": http.get("/runs/"),
            "api": http.get("/v1/runs", headers={"Authorization": "Bearer sam3_not_a_token"}),
            "health": http.get("/healthz"),
        }


def test_requests_fail_cleanly_while_postgresql_is_down_and_recover(
    app: tuple[str, Restartable],
) -> None:
    url, server = app
    before = requests(url)
    assert before["page"].status_code == 302  # no such session: to the sign-in page
    assert before["api"].status_code == 401
    assert before["health"].json()["checks"]["database"] == {"ok": True}

    server.halt()
    started = time.monotonic()
    down = requests(url)
    assert time.monotonic() - started < 10  # three answers, none waiting on a dead socket

    page = down["page"]
    assert page.status_code == 503, page.text[:500]
    assert "sam3web cannot reach its database; try again in a moment" in page.text
    assert page.headers["Retry-After"].isdigit()
    assert "Traceback" not in page.text and "postgres" not in page.text.lower()

    api = down["api"]
    assert api.status_code == 503
    assert api.json()["code"] == "SERVICE_UNAVAILABLE" and api.headers["Retry-After"]

    health = down["health"]
    assert health.status_code == 503
    assert health.json()["checks"]["database"]["ok"] is False
    assert "database: " in health.json()["reasons"][0]
    assert server.url not in health.text and str(server.root) not in health.text

    server.resume()
    after = requests(url)
    assert after["page"].status_code == 302
    assert after["api"].status_code == 401
    assert after["health"].json()["checks"]["database"] == {"ok": True}
