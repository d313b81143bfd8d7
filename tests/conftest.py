"""What every test may ask for: its own media folder and settings, the Runflow stand-in, the
people (personas) who use sam3web, and a tripwire for connections that leave the machine.

The personas: ``owner`` (ada, who makes the runs; ``signed_in`` is her browser),
``teammate`` (grace; ``teammate_client``), ``admin`` (an admin who made none of them;
``admin_client``), ``stranger`` (nobody signed in), and ``disabled`` (a teammate whose account
an admin switched off, with the session she had open: ``disabled_client``)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.servers.basehttp import ThreadedWSGIServer
from django.test import Client

from runflow_standin import RunflowStandin
from tests.factories import BROKE_KEY, TEST_KEY
from tests.s3_server import S3Server, storage_settings
from tests.sample_images import ROOT

# The live test server listens with socketserver's backlog of 5: a burst of simultaneous
# callbacks (as Runflow may send) would be reset by the kernel before reaching the app.
ThreadedWSGIServer.request_queue_size = 128

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _isolated_settings(settings: Any, tmp_path: Path) -> None:
    """Every test gets its own media folder and a Runflow that is our stand-in."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RUNFLOW_API_KEY = TEST_KEY
    settings.RUNFLOW_BACKOFF_BASE = 0.01
    settings.RUNFLOW_BACKOFF_MAX = 0.05
    settings.RUNFLOW_TIMEOUT = 5.0


@pytest.fixture(scope="session")
def _standin_server() -> Iterator[RunflowStandin]:
    with RunflowStandin(api_keys=[TEST_KEY, BROKE_KEY], broke_keys=[BROKE_KEY]) as server:
        yield server


@pytest.fixture
def standin(_standin_server: RunflowStandin, settings: Any) -> Iterator[RunflowStandin]:
    """The Runflow stand-in, a real HTTP server on a real socket, fresh for each test."""
    _standin_server.reset()
    settings.RUNFLOW_BASE_URL = _standin_server.base_url
    yield _standin_server
    errors = _standin_server.handler_errors
    _standin_server.reset()
    assert errors == [], "the stand-in crashed on a request"


@pytest.fixture
def fast_polling(settings: Any) -> None:
    """Polling and copying as fast as the stand-in answers, for tests that wait on them."""
    settings.SAM3WEB_POLL_FIRST = 0.05
    settings.SAM3WEB_POLL_MAX_INTERVAL = 0.2
    settings.SAM3WEB_ARTIFACT_TIMEOUT = 2.0
    settings.SAM3WEB_ARTIFACT_BACKOFF = 0.01


# --- personas -----------------------------------------------------------------------------------


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    """ada, who makes the runs."""
    return django_user_model.objects.create_user("ada", password=PASSWORD)


@pytest.fixture
def signed_in(client: Client, owner: Any) -> Client:
    """ada's browser, signed in."""
    client.force_login(owner)
    return client


@pytest.fixture
def teammate(django_user_model: Any) -> Any:
    """grace, on the same team: sees every run, manages only her own."""
    return django_user_model.objects.create_user("grace", password="another long pass")


@pytest.fixture
def teammate_client(teammate: Any) -> Client:
    client = Client()
    client.force_login(teammate)
    return client


@pytest.fixture
def admin(django_user_model: Any) -> Any:
    """An admin who made none of the runs."""
    return django_user_model.objects.create_user(
        "root", password="an admin's long pass", is_staff=True, is_superuser=True
    )


@pytest.fixture
def admin_client(admin: Any) -> Client:
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def stranger() -> Client:
    """Someone not signed in."""
    return Client()


@pytest.fixture
def disabled(django_user_model: Any) -> Any:
    """mallory, whose account an admin disabled."""
    return django_user_model.objects.create_user("mallory", password="a disabled long pass")


@pytest.fixture
def disabled_client(disabled: Any) -> Client:
    """mallory's browser: signed in while the account was active, then it was disabled."""
    client = Client()
    client.force_login(disabled)
    disabled.is_active = False
    disabled.save(update_fields=["is_active"])
    return client


# --- the network --------------------------------------------------------------------------------


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection attempt, recorded; one to a non-loopback address fails the test
    before a packet leaves, so refusal tests can never reach 10.x or 169.254.x for real."""
    attempts: list[tuple[str, int]] = []
    real = socket.create_connection

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"tried to connect to {address}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return attempts


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name the browser tests' screenshots at the end of the run, so CI output points at them."""
    shots = sorted((ROOT / "test-artifacts" / "screenshots").glob("*.png"))
    if shots:
        terminalreporter.section("screenshots of the key states")
        for shot in shots:
            terminalreporter.write_line(
                f"{shot.relative_to(ROOT)}  ({shot.stat().st_size // 1024} KiB)"
            )


# --- object storage -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server, one for the whole test run (tests/s3_server.py)."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def object_storage(s3_server: S3Server, settings: Any) -> Iterator[tuple[S3Server, str]]:
    """Media in a bucket of its own for this test, as AWS_STORAGE_BUCKET_NAME makes it (worker
    processes get the same through tests.factories.worker_env)."""
    if not s3_server.running:  # a test before stopped it and failed before starting it again
        s3_server.start()
    bucket = s3_server.new_bucket()
    settings.STORAGES = {**settings.STORAGES, "default": storage_settings(s3_server, bucket)}
    yield s3_server, bucket
    if not s3_server.running:
        s3_server.start()
