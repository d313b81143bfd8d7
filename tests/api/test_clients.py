"""Real clients against the live app, each written as Runflow's SAM 3 model page calls Runflow
(tests/api/clients/: Python with requests, Node's fetch, curl), run as subprocesses with only
the base URL and the key changed. Each makes a run with a callback_url, polls it until it
succeeds, and the test checks what a caller would: the 201 and its run id, the masks
downloadable by their links alone, and a callback that arrives signed the way Runflow signs,
checked by a receiver written the way Runflow's docs tell one to verify it."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts.models import Profile
from segmentation.models import CallerCallback, Run
from tests.factories import drain
from tests.image_server import ImageServer

CLIENTS = Path(__file__).parent / "clients"
CALLBACK_FIELDS = [
    "event",
    "run_id",
    "status",
    "output",
    "duration_ms",
    "created_at",
    "completed_at",
    "metadata",
]


# --- a callback receiver, as Runflow's docs write one -------------------------------------------


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    secret: str
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verified(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.verified]


def verify_signature(raw_body: bytes, signature: str, secret: str) -> bool:
    """Runflow's recipe: HMAC-SHA256 of the raw body, keyed with the secret, hex, compared in
    constant time."""
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def receiver_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            raw_body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signature = self.headers.get("Runflow-Signature", "")
            ok = verify_signature(raw_body, signature, receiver.secret)
            with receiver.lock:
                receiver.deliveries.append(Delivery(dict(self.headers.items()), raw_body, ok))
            answer = b'{"ok": true}' if ok else b'{"error": "bad signature"}'
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


@pytest.fixture
def receiver(owner: Any) -> Iterator[Receiver]:
    """ada's webhook: a real HTTP server on 127.0.0.1 that knows her signing secret."""
    got = Receiver(secret=Profile.of(owner).signing_secret())
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver_handler(got))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/webhook"
    yield got
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def images() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture
def local_network(settings: Any) -> None:
    """Images and callbacks on this machine are allowed, as an admin allows the team's own
    network (the guard refuses loopback otherwise)."""
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]


# --- the clients --------------------------------------------------------------------------------


def client_command(name: str) -> list[str]:
    if name == "python":
        return [sys.executable, str(CLIENTS / "runflow_example.py")]
    if name == "node":
        node = shutil.which("node")
        if node is None:
            pytest.skip("Node.js is not installed")
        return [node, str(CLIENTS / "runflow_example.mjs")]
    bash, curl = shutil.which("bash"), shutil.which("curl")
    if bash is None or curl is None:
        pytest.skip("bash or curl is not installed")
    return [bash, str(CLIENTS / "runflow_example.sh")]


@pytest.mark.parametrize("name", ["python", "node", "curl"])
def test_runflows_examples_work_against_sam3web(
    name: str,
    live_server: Any,
    token: str,
    owner: Any,
    standin: Any,
    fast_polling: None,
    local_network: None,
    receiver: Receiver,
    images: ImageServer,
) -> None:
    standin.complete_after = 0.05
    image_url = images.url("/images/cat.jpg")
    process = subprocess.Popen(
        client_command(name),
        env={
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "SAM3WEB_BASE_URL": live_server.url,
            "SAM3WEB_API_KEY": token,
            "SAM3WEB_IMAGE_URL": image_url,
            "SAM3WEB_CALLBACK_URL": receiver.url,
            "SAM3WEB_POLL_SECONDS": "0.1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The client creates the run and polls; the worker (here, in this process) sends it
        # to the stand-in, gets its result, copies its masks and sends the callback.
        drain(lambda: Run.objects.filter(owner=owner).exists() or process.poll() is not None)
        run = Run.objects.filter(owner=owner).first()
        assert run is not None, process.communicate(timeout=5)
        drain(
            lambda: CallerCallback.objects.filter(
                run=run, state=CallerCallback.State.DELIVERED
            ).exists(),
            timeout=40,
        )
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stdout + stderr
    created, final = (json.loads(line) for line in stdout.strip().splitlines())

    # The answer to the POST: Runflow's run object, queued.
    assert created["id"] == str(run.pk)
    assert created["model_id"] == "meta/sam-3/image"
    assert created["status_code"] == "queued"
    assert created["callback_url"] == receiver.url
    assert created["input"]["image_url"] == image_url
    assert created["input"]["return_multiple_masks"] is True
    assert created["metadata"] == {"client": name}
    assert run.token is not None and run.source_url == image_url

    # Polled until it succeeded, its masks downloadable by their links alone.
    assert final["id"] == created["id"] and final["status_code"] == "succeeded"
    masks = final["output"]["model_data"]["masks"]
    assert masks
    for mask in masks:
        got = httpx.get(mask["url"])  # no Authorization: the link is signed
        assert got.status_code == 200
        assert got.headers["Content-Type"] == "image/png"
        assert got.content.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(got.content) == mask["file_size"]

    # The callback: once, signed with ada's secret, in Runflow's shape.
    [delivery] = receiver.deliveries
    assert delivery.verified
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["Runflow-Request-Id"]
    payload = json.loads(delivery.body)
    assert list(payload) == CALLBACK_FIELDS
    assert payload["event"] == "run.completed"
    assert payload["run_id"] == created["id"]
    assert payload["status"] == "succeeded"
    assert payload["metadata"] == {"client": name}
    assert payload["created_at"] == final["created_at"]
    assert payload["completed_at"] == final["completed_at"]
    assert payload["duration_ms"] == final["duration_ms"]
    sent = payload["output"]["model_data"]["masks"]
    assert [m["file_name"] for m in sent] == [m["file_name"] for m in masks]
    assert httpx.get(sent[0]["url"]).content == httpx.get(masks[0]["url"]).content

    # What sam3web recorded of it, through the API.
    deliveries = httpx.get(
        f"{live_server.url}/v1/runs/{run.pk}/callback",
        headers={"Authorization": f"Bearer {token}"},
    ).json()["items"]
    assert [(d["event"], d["state"], d["url"]) for d in deliveries] == [
        ("run.completed", "delivered", receiver.url)
    ]
    assert deliveries[0]["request_id"] == delivery.headers["Runflow-Request-Id"]


def test_the_receiver_refuses_a_body_signed_with_another_secret(receiver: Receiver) -> None:
    """The receiver is the check: a wrong signature gets 401, as Runflow's docs say."""
    body = json.dumps({"event": "run.completed"}).encode()
    wrong = hmac.new(b"whsec_not-ada", body, hashlib.sha256).hexdigest()
    right = hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
    assert (
        httpx.post(receiver.url, content=body, headers={"Runflow-Signature": wrong}).status_code
        == 401
    )
    assert (
        httpx.post(receiver.url, content=body, headers={"Runflow-Signature": right}).status_code
        == 200
    )
    assert (
        httpx.post(
            receiver.url, content=body + b" ", headers={"Runflow-Signature": right}
        ).status_code
        == 401
    )
    assert [d.verified for d in receiver.deliveries] == [False, True, False]
