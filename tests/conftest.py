from __future__ import annotations

import io
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.servers.basehttp import ThreadedWSGIServer
from django.test import Client

from tests.runflow_standin import RunflowStandin

# The live test server listens with socketserver's backlog of 5: a burst of simultaneous
# callbacks (as Runflow may send) would be reset by the kernel before reaching the app.
ThreadedWSGIServer.request_queue_size = 128

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT.parent / "shared" / "images"
TEST_KEY = "test-key"
BROKE_KEY = "broke-key"


@pytest.fixture(autouse=True)
def _isolated_settings(settings, tmp_path: Path) -> None:
    """Every test gets its own media folder and a Runflow that is our stand-in."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.RUNFLOW_API_KEY = TEST_KEY
    settings.RUNFLOW_BACKOFF_BASE = 0.01
    settings.RUNFLOW_BACKOFF_MAX = 0.05
    settings.RUNFLOW_TIMEOUT = 5.0


@pytest.fixture(scope="session")
def _standin_server() -> Iterator[RunflowStandin]:
    with RunflowStandin(api_keys=[TEST_KEY, BROKE_KEY], broke_keys=[BROKE_KEY]) as server:
        yield server


@pytest.fixture
def standin(_standin_server: RunflowStandin, settings) -> Iterator[RunflowStandin]:
    """The Runflow stand-in, a real HTTP server on a real socket, fresh for each test."""
    _standin_server.reset()
    settings.RUNFLOW_BASE_URL = _standin_server.base_url
    yield _standin_server
    errors = _standin_server.handler_errors
    _standin_server.reset()
    assert errors == [], "the stand-in crashed on a request"


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("ada", password="correct horse battery")


@pytest.fixture
def signed_in(client: Client, user) -> Client:
    client.force_login(user)
    return client


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection attempt, recorded; one to a non-loopback address fails the test
    before a packet leaves, so refusal tests can never reach 10.x or 169.254.x for real."""
    attempts: list[tuple[str, int]] = []
    real = socket.create_connection

    def guarded(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        attempts.append(address)
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"tried to connect to {address}")
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", guarded)
    return attempts


def run_worker() -> None:
    """Run the real database worker until the queue is empty."""
    call_command("db_worker", "--batch", "--no-startup-delay", "--interval", "0")


def image_bytes(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def upload(name: str, data: bytes | None = None):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, image_bytes(name) if data is None else data)


def png_bytes(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def pytest_terminal_summary(terminalreporter) -> None:
    """Name the browser tests' screenshots at the end of the run, so CI output points at them."""
    shots = sorted((ROOT / "test-artifacts" / "screenshots").glob("*.png"))
    if shots:
        terminalreporter.section("screenshots of the key states")
        for shot in shots:
            terminalreporter.write_line(
                f"{shot.relative_to(ROOT)}  ({shot.stat().st_size // 1024} KiB)"
            )
