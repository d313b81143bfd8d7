"""The stand-in's server: ``RunflowStandin`` (state and routes) and its HTTP plumbing."""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import hashlib
import hmac
import http.client
import io
import json
import re
import secrets
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image

from runflow_standin import sam3
from segmentation import schema

SAM3_MODEL_ID = "meta/sam-3/image"
MAX_ASSET_BYTES = 52_428_800
# Generous enough for an inline data: URI of a large photo, small enough to stay a sane limit.
MAX_JSON_BODY_BYTES = 16 * 1024 * 1024
MAX_LIST_LIMIT = 500
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "cancelled", "partial_succeeded"})

DATA_URI = re.compile(r"data:(image/[A-Za-z0-9.+-]+);base64,(.*)", re.DOTALL)

# --- how runs end -----------------------------------------------------------------------------

# Terminal states a run can be sent to; "cancelled" is accepted and stored as the run object's
# "canceled" (the API's own spelling there), while callbacks say "cancelled".
OUTCOMES = ("succeeded", "partial_succeeded", "failed", "canceled")
OUTPUT_SHAPES = ("model_data", "top_level", "outputs_only")
FILE_FAULTS = ("404", "500", "500-once", "html", "hang", "slow")
_SUCCESSES = frozenset({"succeeded", "partial_succeeded"})
_CALLBACK_EVENTS = {
    "succeeded": ("run.completed", "succeeded"),
    "partial_succeeded": ("run.partial_succeeded", "partial_succeeded"),
    "failed": ("run.failed", "failed"),
    "canceled": ("run.cancelled", "cancelled"),
}
MODEL_FAILURE = {
    "failure_code": "MODEL_ERROR",
    "failure_message": "The model could not process this image",
    "failure_stage_code": "inference",
}
# An input image the stand-in cannot decode fails the run the way a real model would.
INPUT_FAILURE = {
    "failure_code": "INVALID_INPUT",
    "failure_message": "The input image could not be decoded",
    "failure_stage_code": "preprocessing",
}
PRICE_PER_IMAGE = "0.005"
CALLBACK_USER_AGENT = "Runflow-Callbacks/1.0"
# The delivery gives up reading a receiver's answer past this; the status line is what counts.
_MAX_CALLBACK_ANSWER_BYTES = 1 << 20
_MASK_NAME = re.compile(r"mask-(?P<index>0|[1-9][0-9]*)\.png")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in received it."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lowercased
    body: bytes
    json: Any  # the parsed body, None when empty or not JSON
    time: float  # time.monotonic() at arrival, for measuring gaps between retries


@dataclass
class Reply:
    """An answer: a dict or list body is sent as JSON, str/bytes as they are."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    close: bool = False  # close the connection afterwards (the body was not read)
    # Sends the body itself once the headers are out (to stall or trickle it); returns False
    # when it gave up, and the connection is then closed short of Content-Length.
    writer: Callable[[io.BufferedIOBase, bytes], bool] | None = None


@dataclass(frozen=True)
class CallbackAttempt:
    """One POST of a callback to a run's callback_url, as the stand-in sent it."""

    run_id: str
    url: str
    body: bytes  # the exact bytes sent (and signed)
    headers: dict[str, str]  # as sent, original capitalisation
    status: int | None  # the receiver's HTTP status, None when it could not be reached
    error: str | None  # why there is no status: refused, reset, timed out...
    time: float  # time.monotonic() when the attempt started
    attempt: int  # 1, 2, 3 within one delivery
    delivery: int  # 1 for the original delivery, 2... for each redelivery

    @property
    def request_id(self) -> str:
        return self.headers["Runflow-Request-Id"]


def error_reply(
    status: int,
    code: str,
    message: str,
    errors: list[dict[str, Any]] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> Reply:
    """Runflow's documented error envelope."""
    body = {"code": code, "message": message, "errors": errors}
    return Reply(status, body, headers=headers or {})


def now_iso() -> str:
    # Runflow writes +00:00 rather than Z.
    return datetime.now(UTC).isoformat()


@dataclass
class _Asset:
    asset_id: str
    filename: str
    mime_type: str
    size_bytes: int
    signature: str
    created_at: str
    data: bytes | None = None
    confirmed: bool = False

    def as_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.asset_id,
            "url": f"{base_url}/assets/{self.asset_id}",
            "filename": self.filename,
            "mime_type": self.mime_type,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at,
        }


@dataclass
class _Idempotent:
    fingerprint: str  # path + sha256 of the exact body bytes
    reply: Reply


class _Errors:
    """Collects pydantic-style error items: {"loc": [...], "msg": ..., "type": ...}."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: list[Any], msg: str, type_: str) -> None:
        self.items.append({"loc": loc, "msg": msg, "type": type_})

    def check_int(self, loc: list[Any], value: Any) -> bool:
        # bool is an int in Python but not in JSON Schema: true is not 1.
        if isinstance(value, int) and not isinstance(value, bool):
            return True
        self.add(loc, "Input should be a valid integer", "int_type")
        return False

    def check_dict(self, loc: list[Any], value: Any) -> bool:
        if isinstance(value, dict):
            return True
        self.add(loc, "Input should be a valid dictionary", "dict_type")
        return False

    def check_keys(
        self, loc: list[Any], value: dict[str, Any], required: Iterable[str], allowed: Iterable[str]
    ) -> None:
        for key in required:
            if key not in value:
                self.add([*loc, key], "Field required", "missing")
        allowed = set(allowed)
        for key in value:
            if key not in allowed:
                self.add([*loc, key], "Extra inputs are not permitted", "extra_forbidden")


def _xml_error(status: int, code: str, message: str) -> Reply:
    # Result files live in a bucket behind presigned URLs: errors look like the bucket's.
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return Reply(status, body, content_type="application/xml")


_HTML_PAGE = (
    "<!doctype html><html><head><title>Sign in</title></head>"
    "<body><h1>Please sign in</h1><form method=post><input name=user></form></body></html>"
)


# --- the stand-in -----------------------------------------------------------------------------


class RunflowStandin:
    """Runflow on 127.0.0.1. Start it, point a client at `base_url`, inspect what happened.

    Knobs, plain attributes that `reset()` puts back; they act after the key is checked and
    before anything else, in this order:
      scripted          answer the next create calls with these (status, body[, headers]),
                        popped in order; a dict/list body goes as JSON, str/bytes as is (HTML...)
      rate_limit_next   answer the next N create calls with 429 RATE_LIMITED
      retry_after       the Retry-After header on those 429s ("2", an HTTP-date; None: none)
      unavailable_next  answer the next N create calls with 503 MODEL_UNAVAILABLE
      create_delay      hold each new run's 201 this long after recording it: a slow answer, or
                        past the client's timeout a lost one (the run exists; replays are not held)
      upload_fail_next  answer the next N asset PUTs with 503 (an XML body, like a bucket)

    How runs end (read when a run completes, except complete_after, read when it is created):
      complete_after    seconds after creation when a new run finishes by itself: `running` at
                        half-time, terminal at the end (None: it stays queued until `finish`)
      outcome           the terminal state of runs that finish by themselves: succeeded,
                        partial_succeeded, failed (MODEL_ERROR at inference), canceled
      output_shape      "model_data" (Runflow's envelope: outputs[], model_data, nsfw_detected,
                        seed, timing), "top_level" (SAM 3's fields right in output),
                        "outputs_only" (just the unified outputs[] array)
      image_size        (w, h) assumed for inputs it cannot look at (https:// URLs)
      mask_scale        masks come back at round(image size × this), to test resizing
    Callbacks (POSTed on a daemon thread when a run with a callback_url ends):
      callback_secret   sign with Runflow-Signature: hex HMAC-SHA256 of the body (None: unsigned)
      callback_backoff  the waits between attempts; len + 1 attempts, retried on 5xx and network
                        errors only
      callback_timeout  seconds each attempt may take (connect, send, answer)
    Result files (mask and preview URLs, no key needed, like presigned URLs):
      file_faults       {mask index or "preview": "404" | "500" | "500-once" | "html" | "hang" |
                        "slow"}; "hang" sends the headers and stalls until `release_files()`,
                        reset or stop; "slow" trickles the body over `file_slow_seconds`
      file_delay        hold every file GET this long before answering
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = ("test-key",),
        broke_keys: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        self.api_keys = frozenset(api_keys)
        # Keys that authenticate but have no credit left.
        self.broke_keys = frozenset(broke_keys)
        self.host = host
        self.port = port
        self.verbose = verbose
        self.base_url = ""
        self._lock = threading.RLock()
        # Wakes whoever waits for a run to end or a callback to be recorded.
        self._changed = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Set on stop, so a create held by `create_delay` ends at once.
        self._stopping = threading.Event()
        # Set when the current test's world ends (reset or stop): timers, deliveries and
        # stalled file answers started in it stop, so nothing leaks into the next test.
        self._cancel = threading.Event()
        self.reset()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        if self._cancel.is_set():
            self._cancel = threading.Event()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"runflow-standin:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self._cancel.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every run, asset, request and key, and put every knob back."""
        with self._lock:
            # End the previous world's timers, deliveries and stalled files first.
            self._cancel.set()
            self._cancel = threading.Event()
            self._files_released = threading.Event()
            self.complete_after: float | None = None
            self.outcome = "succeeded"
            self.output_shape = "model_data"
            self.image_size: tuple[int, int] = (1024, 768)
            self.mask_scale = 1.0
            self.callback_secret: str | None = None
            self.callback_backoff: tuple[float, ...] = (1.0, 2.0)
            self.callback_timeout = 10.0
            self.file_faults: dict[int | str, str] = {}
            self.file_delay = 0.0
            self.file_slow_seconds = 2.0
            self._results: dict[str, sam3.Result] = {}
            self._callbacks: list[CallbackAttempt] = []
            self._callback_bodies: dict[str, bytes] = {}  # what redeliveries send again
            self._deliveries: dict[str, int] = {}  # deliveries started per run
            self.rate_limit_next = 0
            self.retry_after: str | None = None
            self.unavailable_next = 0
            self.create_delay = 0.0
            self.scripted: list[tuple[Any, ...]] = []
            self.upload_fail_next = 0
            self._runs: dict[str, dict[str, Any]] = {}  # in creation order
            self._requests: list[RecordedRequest] = []
            self._idempotency: dict[tuple[str, str], _Idempotent] = {}
            self._assets: dict[str, _Asset] = {}
            self._handler_errors: list[str] = []

    # --- what happened (copies, safe to use while requests arrive) -----------------------------

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._runs)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def handler_errors(self) -> list[str]:
        """Tracebacks of requests that ended in a 500 from a bug here; tests assert it is empty."""
        with self._lock:
            return list(self._handler_errors)

    def create_calls(self) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.method == "POST" and r.path.startswith("/v1/models/") and r.path.endswith("/runs")
        ]

    def runs_for_client_ref(self, client_ref: str) -> list[dict[str, Any]]:
        return [run for run in self.runs.values() if run.get("client_ref") == client_ref]

    @property
    def assets(self) -> dict[str, dict[str, Any]]:
        """Uploads by id: filename, mime_type, size_bytes, data (None until PUT), confirmed."""
        with self._lock:
            return {
                asset_id: {
                    "filename": a.filename,
                    "mime_type": a.mime_type,
                    "size_bytes": a.size_bytes,
                    "data": a.data,
                    "confirmed": a.confirmed,
                }
                for asset_id, a in self._assets.items()
            }

    def set_run_status(self, run_id: str, status: str, **fields: Any) -> dict[str, Any]:
        """Move a run along (`queued` → `running` → `succeeded` ...), filling the timestamps a
        real run would get unless given; returns the updated run."""
        with self._lock:
            run = self._runs[run_id]
            run["status_code"] = status
            if status != "queued" and run.get("started_at") is None:
                run["started_at"] = now_iso()
            if status in TERMINAL_STATUSES and run.get("completed_at") is None:
                run["completed_at"] = now_iso()
            run.update(fields)
            return copy.deepcopy(run)

    # --- finishing runs ------------------------------------------------------------------------

    def forget(self, run_id: str) -> None:
        """Runflow no longer knows the run (deleted there, its retention over): looking it up
        answers 404 RUN_NOT_FOUND from now on."""
        with self._lock:
            del self._runs[run_id]

    def finish(self, run_id: str, status: str = "succeeded", **fields: Any) -> dict[str, Any]:
        """End a run now, as if Runflow finished it: output (for a success), timestamps,
        duration, cost, failure fields, then the callback on a background thread. `fields`
        override what the run would get (e.g. output=..., failure_code=...). Returns the run."""
        with self._lock:
            if self._runs[run_id]["status_code"] in TERMINAL_STATUSES:
                raise ValueError(f"run {run_id} already ended; terminal states never change")
        run = self._complete(run_id, status, fields, self._cancel)
        if run is None:
            raise ValueError(f"run {run_id} ended on its own while finish() was drawing it")
        return run

    def wait_for_run(self, run_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """Block until the run is terminal (a timer finishing it); returns it."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: self._runs[run_id]["status_code"] in TERMINAL_STATUSES, timeout
            ):
                raise TimeoutError(f"run {run_id} still {self._runs[run_id]['status_code']}")
            return copy.deepcopy(self._runs[run_id])

    @property
    def callbacks(self) -> list[CallbackAttempt]:
        """Every callback attempt so far, in the order their answers came."""
        with self._lock:
            return list(self._callbacks)

    def wait_for_callbacks(self, count: int, timeout: float = 5.0) -> list[CallbackAttempt]:
        """Block until at least `count` callback attempts are recorded; returns them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._callbacks) >= count, timeout):
                raise TimeoutError(f"{len(self._callbacks)} callback attempts, not {count}")
            return list(self._callbacks)

    def redeliver(self, run_id: str) -> int:
        """Send a run's callback again, the same bytes with a new Runflow-Request-Id, like
        POST /v1/runs/{id}/callback-redeliveries. Returns the delivery's number (2, 3...)."""
        with self._lock:
            body = self._callback_bodies.get(run_id)
            if body is None:
                raise ValueError(f"run {run_id} has sent no callback to send again")
            return self._start_delivery(run_id, self._runs[run_id]["callback_url"], body)

    def expire_files(self) -> None:
        """Every mask and preview URL issued so far answers 404 from now on, like presigned
        URLs past their expiry. Runs that end later get working URLs."""
        with self._lock:
            for result in self._results.values():
                result.expired = True

    def release_files(self) -> None:
        """Let file answers stalled by the "hang" fault finish (and later ones not stall)."""
        self._files_released.set()

    def file_requests(self) -> list[RecordedRequest]:
        """The GETs of mask and preview files, in arrival order."""
        return [r for r in self.requests if r.method == "GET" and r.path.startswith("/files/")]

    def _auto_complete(self, run_id: str, after: float, cancel: threading.Event) -> None:
        """A run's timer: running at half-time, ended at `after` seconds from creation."""
        try:
            if cancel.wait(after / 2):
                return
            with self._lock:
                run = self._runs.get(run_id)
                if cancel.is_set() or run is None or run["status_code"] != "queued":
                    return
                run["status_code"] = "running"
                run["started_at"] = now_iso()
            if cancel.wait(after / 2):
                return
            with self._lock:
                outcome = self.outcome
            self._complete(run_id, outcome, {}, cancel)
        except Exception:
            self._background_error(cancel)

    def _complete(
        self, run_id: str, status: str, fields: dict[str, Any], cancel: threading.Event
    ) -> dict[str, Any] | None:
        """Take a run to a terminal state; None when it ended meanwhile or the world reset."""
        status = "canceled" if status == "cancelled" else status
        if status not in OUTCOMES:
            raise ValueError(f"status must be one of {OUTCOMES}, not {status!r}")
        with self._lock:
            run = self._runs.get(run_id)
            if cancel.is_set() or run is None or run["status_code"] in TERMINAL_STATUSES:
                return None
            data = copy.deepcopy(run["input"])
            knobs = (self.output_shape, self.image_size, self.mask_scale)
        output: Any = None
        result = None
        failure: dict[str, Any] = {}
        if status == "failed":
            failure = MODEL_FAILURE
        elif status in _SUCCESSES:
            # Drawing masks takes a while for big inputs: not under the lock.
            built = self._build_output(run_id, data, *knobs)
            if built is None:
                status, failure = "failed", INPUT_FAILURE
            else:
                output, result = built
        with self._lock:
            if cancel.is_set() or run_id not in self._runs:
                return None
            if run["status_code"] in TERMINAL_STATUSES:
                return None  # a racing finish() or timer got there first
            now = datetime.now(UTC)
            created = datetime.fromisoformat(run["created_at"])
            run["status_code"] = status
            run["started_at"] = run["started_at"] or now.isoformat()
            run["completed_at"] = now.isoformat()
            run["duration_ms"] = max(0, int((now - created).total_seconds() * 1000))
            run["cost"] = PRICE_PER_IMAGE if status in _SUCCESSES else "0"
            run["output"] = output
            run.update({"failure_code": None, "failure_message": None, "failure_stage_code": None})
            run.update(failure)
            run.update(fields)
            if result is not None:
                self._results[run_id] = result
            if run.get("callback_url"):
                body = self._callback_body(run)
                self._callback_bodies[run_id] = body
                self._start_delivery(run_id, run["callback_url"], body)
            self._changed.notify_all()
            return copy.deepcopy(run)

    def _callback_body(self, run: dict[str, Any]) -> bytes:
        status = run["status_code"]
        event, callback_status = _CALLBACK_EVENTS.get(status, ("run.completed", status))
        # Key order as Runflow's docs list the fields; receivers must not depend on it, but a
        # signature is over these exact bytes.
        payload = {
            "event": event,
            "run_id": run["id"],
            "status": callback_status,
            "output": run["output"],
            "duration_ms": run["duration_ms"],
            "created_at": run["created_at"],
            "completed_at": run["completed_at"],
            "metadata": run["metadata"],
        }
        return json.dumps(payload).encode()

    # --- building SAM 3's output ------------------------------------------------------------

    def _input_bytes(self, url: str) -> bytes | None:
        """The input image's bytes when it is something we hold (a data: URI or one of our
        assets); None for anything else, which is never fetched."""
        match = DATA_URI.fullmatch(url)
        if match is not None:
            try:
                return base64.b64decode(match.group(2))
            except (binascii.Error, ValueError):
                return b""
        asset_id = None
        if url.startswith("runflow://assets/"):
            asset_id = url.removeprefix("runflow://assets/")
        elif url.startswith("http://") and self._is_own_url(url):
            path = urlsplit(url).path
            if path.startswith("/assets/"):
                asset_id = path.removeprefix("/assets/")
        if asset_id is None:
            return None
        with self._lock:
            asset = self._assets.get(asset_id)
            return b"" if asset is None or asset.data is None else asset.data

    def _build_output(
        self,
        run_id: str,
        data: dict[str, Any],
        shape: str,
        fallback_size: tuple[int, int],
        scale: float,
    ) -> tuple[dict[str, Any], sam3.Result] | None:
        """SAM 3's output for this input, shaped per `shape`; None if the image is unreadable."""
        if shape not in OUTPUT_SHAPES:
            raise ValueError(f"output_shape must be one of {OUTPUT_SHAPES}, not {shape!r}")
        source = self._input_bytes(data["image_url"])
        if source is None:
            image_size = fallback_size
        else:
            try:
                # Header only, and the size as stored: Runflow does not apply EXIF orientation
                # (the app sends pixels already upright).
                with Image.open(io.BytesIO(source)) as image:
                    image_size = image.size
            except Exception:  # any decoder complaint (not an image, a bomb...) fails the run
                return None
        mask_size = (max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale)))
        apply_mask = data.get("apply_mask", True)
        result = sam3.Result(
            image_url=data["image_url"],
            image_size=image_size,
            mask_size=mask_size,
            instances=sam3.plan_instances(data, image_size),
            preview=sam3.PREVIEW_FORMATS[data.get("output_format", "png")] if apply_mask else None,
            sync_mode=bool(data.get("sync_mode", False)),
        )
        include_scores = data.get("include_scores", False)
        include_boxes = data.get("include_boxes", False)
        base = f"{self.base_url}/files/{run_id}"
        masks: list[dict[str, Any]] = []
        scores: list[float] = []
        boxes: list[list[float]] = []
        for index, instance in enumerate(result.instances):
            # Drawn once now for the box and the file size, then dropped: GETs draw it again.
            mask = instance.render(image_size, mask_size)
            png = sam3.encode(mask, "PNG")
            name = f"mask-{index}.png"
            url = sam3.data_uri("image/png", png) if result.sync_mode else f"{base}/{name}"
            masks.append(
                {
                    "url": url,
                    "content_type": "image/png",
                    "file_name": name,
                    "file_size": len(png),
                    "width": mask_size[0],
                    "height": mask_size[1],
                }
            )
            scores.append(sam3.score(index))
            boxes.append(sam3.normalized_box(mask))
        preview = None
        if result.preview is not None:
            _, extension, content_type = result.preview
            name = f"preview.{extension}"
            url = (
                sam3.data_uri(content_type, self._preview_bytes(result))
                if result.sync_mode
                else f"{base}/{name}"
            )
            preview = {
                "url": url,
                "content_type": content_type,
                "file_name": name,
                "width": image_size[0],
                "height": image_size[1],
            }
        model_data: dict[str, Any] = {"masks": masks, "image": preview}
        if include_scores:
            model_data["scores"] = scores
        if include_boxes:
            model_data["boxes"] = boxes
        model_data["metadata"] = [
            {
                "index": index,
                "score": scores[index] if include_scores else None,
                "box": boxes[index] if include_boxes else None,
            }
            for index in range(len(masks))
        ]
        prompt = sam3.prompt_of(data)
        model_data["prompt"] = prompt
        model_data["actual_prompt"] = prompt
        outputs = [
            {
                "url": file["url"],
                "type": "image",
                "content_type": file["content_type"],
                "width": file["width"],
                "height": file["height"],
                "file_name": file["file_name"],
                **({"file_size": file["file_size"]} if "file_size" in file else {}),
            }
            for file in [*masks, *([preview] if preview else [])]
        ]
        if shape == "top_level":
            return model_data, result
        if shape == "outputs_only":
            return {"outputs": outputs}, result
        seed = int.from_bytes(hashlib.sha256(json.dumps(data).encode()).digest()[:4])
        output = {
            "outputs": outputs,
            "model_data": model_data,
            "nsfw_detected": False,
            "seed": seed,
            "timing": {"inference_ms": 180 + 12 * len(masks)},
        }
        return output, result

    def _preview_bytes(self, result: sam3.Result) -> bytes:
        """The input image with every mask painted over it at half opacity."""
        assert result.preview is not None
        source = self._input_bytes(result.image_url)
        base = None
        if source:
            try:
                with Image.open(io.BytesIO(source)) as image:
                    base = image.convert("RGB")
            except Exception:  # truncated pixels behind a good header: paint on grey instead
                base = None
        if base is None or base.size != result.image_size:
            base = Image.new("RGB", result.image_size, (128, 128, 128))
        for index, instance in enumerate(result.instances):
            alpha = instance.render(result.image_size, result.image_size, fill=128)
            bbox = alpha.getbbox()
            if bbox is not None:
                # Only the object's box: 32 full-frame pastes on a phone photo take seconds.
                base.paste(sam3.PALETTE[index % len(sam3.PALETTE)], bbox, mask=alpha.crop(bbox))
        return sam3.encode(base, result.preview[0], fast=True)

    # --- callbacks ----------------------------------------------------------------------------

    def _start_delivery(self, run_id: str, url: str, body: bytes) -> int:
        """Deliver a callback on its own thread (never a request's): caller holds the lock."""
        number = self._deliveries.get(run_id, 0) + 1
        self._deliveries[run_id] = number
        thread = threading.Thread(
            target=self._deliver,
            args=(run_id, url, body, number, self._cancel),
            name=f"runflow-standin-callback:{run_id[:8]}:{number}",
            daemon=True,
        )
        thread.start()
        return number

    def _deliver(
        self, run_id: str, url: str, body: bytes, number: int, cancel: threading.Event
    ) -> None:
        try:
            with self._lock:
                secret, backoff, timeout = (
                    self.callback_secret,
                    tuple(self.callback_backoff),
                    self.callback_timeout,
                )
            attempts = len(backoff) + 1
            for attempt in range(1, attempts + 1):
                headers = {
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                    "User-Agent": CALLBACK_USER_AGENT,
                    "Runflow-Request-Id": str(uuid.uuid4()),
                }
                if secret is not None:
                    headers["Runflow-Signature"] = hmac.new(
                        secret.encode(), body, hashlib.sha256
                    ).hexdigest()
                sent = time.monotonic()
                status, error = _post(url, body, headers, timeout)
                with self._lock:
                    if cancel.is_set():
                        return
                    self._callbacks.append(
                        CallbackAttempt(
                            run_id, url, body, headers, status, error, sent, attempt, number
                        )
                    )
                    self._changed.notify_all()
                # A 4xx is the receiver's final word, like a 2xx; only its failures are retried.
                if (status is not None and status < 500) or attempt == attempts:
                    return
                if cancel.wait(backoff[attempt - 1]):
                    return
        except Exception:
            self._background_error(cancel)

    def _background_error(self, cancel: threading.Event) -> None:
        """A bug on a timer or delivery thread fails the running test like a handler's would."""
        with self._lock:
            if not cancel.is_set():
                self._handler_errors.append(traceback.format_exc())
                return
        traceback.print_exc()  # from a test already over: do not blame the next one

    # --- request handling (called on the server's threads) ------------------------------------

    def max_body_bytes(self, method: str, path: str) -> int:
        if method == "PUT" and path.startswith("/uploads/"):
            return MAX_ASSET_BYTES
        return MAX_JSON_BODY_BYTES

    def record(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> RecordedRequest:
        parts = urlsplit(target)
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        request = RecordedRequest(
            method=method,
            path=parts.path,
            query=parse_qs(parts.query),
            headers=headers,
            body=body,
            json=parsed,
            time=time.monotonic(),
        )
        with self._lock:
            self._requests.append(request)
        return request

    def dispatch(self, request: RecordedRequest) -> Reply:
        """Route a request; any bug here becomes a 500 JSON answer, never a dead thread."""
        try:
            return self._route(request)
        except Exception:
            with self._lock:
                self._handler_errors.append(traceback.format_exc())
            return error_reply(500, "INTERNAL_ERROR", "The stand-in failed on this request")

    _ROUTES: tuple[tuple[str, re.Pattern[str], str, bool], ...] = tuple(
        (method, re.compile(pattern), name, auth)
        for method, pattern, name, auth in (
            ("GET", r"/v1/auth/me", "_auth_me", True),
            ("POST", r"/v1/models/(?P<model_id>.+)/runs", "_create_run", True),
            ("GET", r"/v1/runs", "_list_runs", True),
            ("GET", r"/v1/runs/(?P<run_id>[^/]+)", "_get_run", True),
            ("GET", r"/v1/runs/(?P<run_id>[^/]+)/callback", "_list_callbacks", True),
            (
                "POST",
                r"/v1/runs/(?P<run_id>[^/]+)/callback-redeliveries",
                "_redeliver_callback",
                True,
            ),
            ("POST", r"/v1/asset-uploads", "_create_asset_upload", True),
            ("POST", r"/v1/asset-uploads/(?P<asset_id>[^/]+)/confirmations", "_confirm", True),
            # Presigned upload URL and public asset URL: no bearer key, like a storage bucket.
            ("PUT", r"/uploads/(?P<asset_id>[^/]+)", "_put_upload", False),
            ("GET", r"/assets/(?P<asset_id>[^/]+)", "_get_asset", False),
            # Result files: presigned URLs in the real service, so no key either.
            ("GET", r"/files/(?P<run_id>[^/]+)/(?P<name>[^/]+)", "_get_file", False),
        )
    )

    def _route(self, request: RecordedRequest) -> Reply:
        allowed: list[str] = []
        for method, pattern, name, auth in self._ROUTES:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            key = None
            if auth:
                key, refusal = self._authenticate(request)
                if refusal is not None:
                    return refusal
            handler: Callable[..., Reply] = getattr(self, name)
            return handler(request, key, **match.groupdict())
        if allowed:
            return error_reply(
                405,
                "METHOD_NOT_ALLOWED",
                f"{request.method} is not allowed on {request.path}",
                headers={"Allow": ", ".join(allowed)},
            )
        return error_reply(404, "NOT_FOUND", f"No route for {request.method} {request.path}")

    def _authenticate(self, request: RecordedRequest) -> tuple[str | None, Reply | None]:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            return None, error_reply(401, "UNAUTHORIZED", "Missing API key")
        if scheme.lower() != "bearer" or key.strip() not in self.api_keys | self.broke_keys:
            return None, error_reply(401, "UNAUTHORIZED", "Invalid API key")
        return key.strip(), None

    def _auth_me(self, request: RecordedRequest, key: str) -> Reply:
        return Reply(
            200,
            {
                "id": "user-standin",
                "email": "standin@example.invalid",
                "organization": {"id": "org-standin", "name": "Runflow stand-in"},
                "credit_ok": key not in self.broke_keys,
            },
        )

    def _create_run(self, request: RecordedRequest, key: str, model_id: str) -> Reply:
        if unquote(model_id) != SAM3_MODEL_ID:
            return error_reply(404, "MODEL_NOT_FOUND", f"No model {model_id!r}")
        with self._lock:
            if self.scripted:
                return _scripted_reply(self.scripted.pop(0))
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
                return error_reply(429, "RATE_LIMITED", "Too many requests", headers=headers)
            if self.unavailable_next > 0:
                self.unavailable_next -= 1
                return error_reply(503, "MODEL_UNAVAILABLE", "The model is temporarily unavailable")
        body, refusal = _json_body(request)
        if refusal is not None:
            return refusal
        errors = self._validate_create(body)
        if errors:
            return error_reply(422, "VALIDATION_ERROR", "Input validation failed", errors)
        if key in self.broke_keys:
            return error_reply(402, "INSUFFICIENT_CREDIT", "Insufficient credit; top up to run")

        idempotency_key = request.headers.get("idempotency-key", "").strip()
        fingerprint = request.path + ":" + hashlib.sha256(request.body).hexdigest()
        with self._lock:
            if idempotency_key:
                seen = self._idempotency.get((key, idempotency_key))
                if seen is not None:
                    if seen.fingerprint != fingerprint:
                        return error_reply(
                            409,
                            "CONFLICT",
                            "Idempotency-Key was already used with a different request body",
                        )
                    # Replays answer at once: only the original creation is held by create_delay.
                    replay = copy.deepcopy(seen.reply)
                    replay.headers["Idempotent-Replayed"] = "true"
                    return replay
            run = {
                "id": str(uuid.uuid4()),
                "model_id": SAM3_MODEL_ID,
                "status_code": "queued",
                "input": body["input"],
                "output": None,
                "metadata": body.get("metadata"),
                "client_ref": body.get("client_ref"),
                "callback_url": body.get("callback_url"),
                "duration_ms": None,
                "cost": None,
                "created_at": now_iso(),
                "started_at": None,
                "completed_at": None,
                "failure_code": None,
                "failure_message": None,
                "failure_stage_code": None,
            }
            self._runs[run["id"]] = run
            reply = Reply(201, copy.deepcopy(run), headers={"Location": f"/v1/runs/{run['id']}"})
            # Remembered as soon as the run exists, so a retry of a lost answer replays it.
            if idempotency_key:
                self._idempotency[(key, idempotency_key)] = _Idempotent(
                    fingerprint, copy.deepcopy(reply)
                )
            delay = self.create_delay
            if self.complete_after is not None:
                threading.Thread(
                    target=self._auto_complete,
                    args=(run["id"], self.complete_after, self._cancel),
                    name=f"runflow-standin-run:{run['id'][:8]}",
                    daemon=True,
                ).start()
        if delay > 0:
            # The run exists; the answer is late (or lost, if the client gives up first).
            self._stopping.wait(delay)
        return reply

    def _validate_create(self, body: Any) -> list[dict[str, Any]]:
        """Runflow's checks of a create body, as pydantic-style items {"loc", "msg", "type"}:
        the schema sam3web itself validates with, plus where the image may come from."""
        issues: list[dict[str, Any]] = []
        try:
            schema.validate_body(body)
        except schema.SchemaError as exc:
            issues = [issue.as_dict() for issue in exc.issues]
        given = body.get("input") if isinstance(body, dict) else None
        if isinstance(given, dict) and isinstance(given.get("image_url"), str):
            issues.extend(self._validate_image_url(given["image_url"]))
        return issues

    def _validate_image_url(self, url: str) -> list[dict[str, Any]]:
        loc = ["input", "image_url"]

        def refuse(msg: str, type_: str) -> list[dict[str, Any]]:
            return [{"loc": loc, "msg": msg, "type": type_}]

        if url.startswith("https://"):
            if not urlsplit(url).netloc:
                return refuse("Input should be a valid URL", "url_parsing")
            return []
        if url.startswith("data:"):
            match = DATA_URI.fullmatch(url)
            if match is None:
                return refuse("Data URI must look like data:image/<type>;base64,...", "url_parsing")
            try:
                decoded = base64.b64decode(match.group(2), validate=True)
            except (binascii.Error, ValueError):
                return refuse("Data URI is not valid base64", "value_error")
            if not decoded:
                return refuse("Data URI holds no data", "value_error")
            return []
        if url.startswith("runflow://assets/"):
            asset_id = url.removeprefix("runflow://assets/")
        elif url.startswith("http://") and self._is_own_url(url):
            # Our own asset URLs, or anything else served here (tests may point at it).
            path = urlsplit(url).path
            if not path.startswith("/assets/"):
                return []
            asset_id = path.removeprefix("/assets/")
        else:
            return refuse(
                "Input should be an https:// URL, a data:image/...;base64, URI or an asset URL",
                "url_scheme",
            )
        with self._lock:
            asset = self._assets.get(asset_id)
            if asset is None or not asset.confirmed:
                return refuse(f"Unknown or unconfirmed asset {asset_id!r}", "value_error")
        return []

    def _is_own_url(self, url: str) -> bool:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:  # a port that is not a number
            return False
        return port == self.port and parts.hostname in {self.host, "127.0.0.1", "localhost"}

    def _get_run(self, request: RecordedRequest, key: str, run_id: str) -> Reply:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return error_reply(404, "RUN_NOT_FOUND", f"Run {run_id} not found")
            return Reply(200, copy.deepcopy(run))

    def _list_callbacks(self, request: RecordedRequest, key: str, run_id: str) -> Reply:
        with self._lock:
            if run_id not in self._runs:
                return error_reply(404, "RUN_NOT_FOUND", f"Run {run_id} not found")
            attempts = [c for c in self._callbacks if c.run_id == run_id]
        data = [
            {
                "delivery": c.delivery,
                "attempt": c.attempt,
                "request_id": c.request_id,
                "url": c.url,
                "response_status": c.status,
                "error": c.error,
            }
            for c in attempts
        ]
        return Reply(200, {"data": data})

    def _redeliver_callback(self, request: RecordedRequest, key: str, run_id: str) -> Reply:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return error_reply(404, "RUN_NOT_FOUND", f"Run {run_id} not found")
            if run_id not in self._callback_bodies:
                return error_reply(
                    409, "NO_CALLBACK", "This run has not sent a callback that could be resent"
                )
            number = self.redeliver(run_id)
        body = {"run_id": run_id, "delivery": number, "status": "queued", "created_at": now_iso()}
        return Reply(202, body)

    def _get_file(self, request: RecordedRequest, key: None, run_id: str, name: str) -> Reply:
        with self._lock:
            delay, faults, cancel = self.file_delay, dict(self.file_faults), self._cancel
            released, slow_seconds = self._files_released, self.file_slow_seconds
        if delay > 0:
            cancel.wait(delay)
        with self._lock:
            result = self._results.get(run_id)
            if result is None or result.expired or result.sync_mode:
                return _xml_error(404, "NoSuchKey", "The specified key does not exist.")
            match = _MASK_NAME.fullmatch(name)
            which: int | str
            if match is not None and int(match["index"]) < len(result.instances):
                which, content_type = int(match["index"]), "image/png"
            elif result.preview is not None and name == f"preview.{result.preview[1]}":
                which, content_type = "preview", result.preview[2]
            else:
                return _xml_error(404, "NoSuchKey", "The specified key does not exist.")
            fault = faults.get(which)
            if fault == "500-once":
                first = name not in result.failed_once
                result.failed_once.add(name)
                fault = "500" if first else None
        if fault == "404":
            return _xml_error(404, "NoSuchKey", "The specified key does not exist.")
        if fault == "500":
            return _xml_error(500, "InternalError", "We encountered an internal error.")
        if fault == "html":
            return Reply(200, _HTML_PAGE, content_type="text/html; charset=utf-8")
        # Drawn here, on the request's thread, and forgotten once sent.
        payload = result.mask_png(which) if isinstance(which, int) else self._preview_bytes(result)
        reply = Reply(200, payload, content_type=content_type)
        if fault == "hang":
            reply.writer = _stall_writer(released, cancel)
        elif fault == "slow":
            reply.writer = _trickle_writer(slow_seconds, cancel)
        elif fault is not None:
            raise ValueError(f"file_faults values must be one of {FILE_FAULTS}, not {fault!r}")
        return reply

    def _list_runs(self, request: RecordedRequest, key: str) -> Reply:
        limit_text = (request.query.get("limit") or ["100"])[0]
        # Runflow calls the page cursor `pq`; `cursor` is taken too, as older SDKs send it.
        cursor = (request.query.get("pq") or request.query.get("cursor") or [""])[0] or None
        try:
            limit = int(limit_text)
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIST_LIMIT:
            return error_reply(
                422,
                "VALIDATION_ERROR",
                "Invalid query parameters",
                [
                    {
                        "loc": ["query", "limit"],
                        "msg": f"Input should be between 1 and {MAX_LIST_LIMIT}",
                        "type": "value_error",
                    }
                ],
            )
        with self._lock:
            newest_first = list(reversed(self._runs))
            start = 0
            if cursor:
                after = _decode_cursor(cursor)
                if after not in self._runs:
                    return error_reply(400, "INVALID_CURSOR", "The cursor is not valid")
                start = newest_first.index(after) + 1
            page_ids = newest_first[start : start + limit]
            page = [copy.deepcopy(self._runs[run_id]) for run_id in page_ids]
        more = start + limit < len(newest_first)
        next_cursor = _encode_cursor(page_ids[-1]) if more and page_ids else None
        return Reply(200, {"items": page, "next_pq": next_cursor, "has_more": more})

    def _create_asset_upload(self, request: RecordedRequest, key: str) -> Reply:
        body, refusal = _json_body(request)
        if refusal is not None:
            return refusal
        errors = _Errors()
        if errors.check_dict(["body"], body):
            errors.check_keys(
                [],
                body,
                ("filename", "mime_type", "size_bytes"),
                ("filename", "mime_type", "size_bytes"),
            )
            for name in ("filename", "mime_type"):
                if name in body and not (isinstance(body[name], str) and body[name]):
                    errors.add([name], "Input should be a non-empty string", "string_type")
            size = body.get("size_bytes")
            if (
                "size_bytes" in body
                and errors.check_int(["size_bytes"], size)
                and not 1 <= size <= MAX_ASSET_BYTES
            ):
                errors.add(
                    ["size_bytes"],
                    f"Input should be between 1 and {MAX_ASSET_BYTES} bytes (50 MiB)",
                    "value_error",
                )
        if errors.items:
            return error_reply(422, "VALIDATION_ERROR", "Input validation failed", errors.items)
        asset = _Asset(
            asset_id=str(uuid.uuid4()),
            filename=body["filename"],
            mime_type=body["mime_type"],
            size_bytes=body["size_bytes"],
            signature=secrets.token_urlsafe(16),
            created_at=now_iso(),
        )
        with self._lock:
            self._assets[asset.asset_id] = asset
        upload_url = f"{self.base_url}/uploads/{asset.asset_id}?sig={asset.signature}"
        return Reply(201, {"asset_id": asset.asset_id, "upload_url": upload_url})

    def _put_upload(self, request: RecordedRequest, key: None, asset_id: str) -> Reply:
        with self._lock:
            if self.upload_fail_next > 0:
                self.upload_fail_next -= 1
                return Reply(503, "<Error><Code>SlowDown</Code></Error>", content_type="text/xml")
            asset = self._assets.get(asset_id)
        signature = (request.query.get("sig") or [""])[0]
        if asset is None or not secrets.compare_digest(signature, asset.signature):
            return error_reply(403, "SIGNATURE_INVALID", "The upload URL is not valid")
        if "authorization" in request.headers:
            # Like a storage bucket given a presigned URL and a bearer key: two credentials.
            return error_reply(
                400, "INVALID_REQUEST", "Only one auth mechanism allowed: the URL is presigned"
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != asset.mime_type:
            return error_reply(
                400,
                "INVALID_REQUEST",
                f"Content-Type {content_type!r} does not match the declared {asset.mime_type!r}",
            )
        if len(request.body) != asset.size_bytes:
            return error_reply(
                400,
                "SIZE_MISMATCH",
                f"Received {len(request.body)} bytes, declared {asset.size_bytes}",
            )
        with self._lock:
            asset.data = request.body
        etag = hashlib.md5(request.body, usedforsecurity=False).hexdigest()
        return Reply(200, b"", headers={"ETag": f'"{etag}"'})

    def _confirm(self, request: RecordedRequest, key: str, asset_id: str) -> Reply:
        with self._lock:
            asset = self._assets.get(asset_id)
            if asset is None:
                return error_reply(404, "ASSET_NOT_FOUND", f"Asset {asset_id} not found")
            if asset.data is None:
                return error_reply(409, "UPLOAD_INCOMPLETE", "Nothing was uploaded for this asset")
            asset.confirmed = True
            return Reply(201, asset.as_json(self.base_url))

    def _get_asset(self, request: RecordedRequest, key: None, asset_id: str) -> Reply:
        with self._lock:
            asset = self._assets.get(asset_id)
            if asset is None or not asset.confirmed or asset.data is None:
                return error_reply(404, "ASSET_NOT_FOUND", f"Asset {asset_id} not found")
            return Reply(200, asset.data, content_type=asset.mime_type)


def _json_body(request: RecordedRequest) -> tuple[Any, Reply | None]:
    try:
        return json.loads(request.body), None
    except ValueError as exc:
        return None, error_reply(
            400,
            "INVALID_JSON",
            "The request body is not valid JSON",
            [{"loc": ["body"], "msg": str(exc), "type": "json_invalid"}],
        )


def _post(
    url: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int | None, str | None]:
    """POST once; (status, None) when the receiver answered, (None, why) when it could not."""
    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read(_MAX_CALLBACK_ANSWER_BYTES)
        return response.status, None
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, garbled
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


def _stall_writer(
    released: threading.Event, cancel: threading.Event
) -> Callable[[io.BufferedIOBase, bytes], bool]:
    """Headers are out; hold the body until release_files(), or give up on reset/stop."""

    def write(out: io.BufferedIOBase, payload: bytes) -> bool:
        while not released.wait(0.05):
            if cancel.is_set():
                return False
        out.write(payload)
        return True

    return write


def _trickle_writer(
    seconds: float, cancel: threading.Event
) -> Callable[[io.BufferedIOBase, bytes], bool]:
    """The body in 20 pieces spread over `seconds`: a slow link, not a dead one."""

    def write(out: io.BufferedIOBase, payload: bytes) -> bool:
        pieces = 20
        step = max(1, -(-len(payload) // pieces))
        for start in range(0, len(payload), step):
            if start and cancel.wait(seconds / pieces):
                return False
            out.write(payload[start : start + step])
            out.flush()
        return True

    return write


def _scripted_reply(entry: tuple[Any, ...]) -> Reply:
    """(status, body) or (status, body, headers) from the `scripted` knob."""
    status, body, *rest = entry
    headers = dict(rest[0]) if rest else {}
    content_type = None
    if isinstance(body, str | bytes):
        text = body if isinstance(body, str) else body.decode("latin-1")
        content_type = "text/html" if text.lstrip().startswith("<") else "text/plain"
    return Reply(status, copy.deepcopy(body), headers=headers, content_type=content_type)


def _encode_cursor(run_id: str) -> str:
    # Opaque on purpose, so the app cannot come to rely on it being a run id.
    return base64.urlsafe_b64encode(run_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        return None


# --- HTTP plumbing ----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], standin: RunflowStandin) -> None:
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        # Idle keep-alive connections would otherwise hold a handler thread after stop().
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # includes ConnectionError and TimeoutError
            return  # the client went away, e.g. it gave up waiting on a slow create
        with self.standin._lock:
            self.standin._handler_errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    timeout = 60  # a client that stops sending mid-request does not hold a thread for ever
    server_version = "runflow-standin"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes; without this, Nagle's algorithm meets the
        # client's delayed ACK and every answer takes an extra ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        standin = self.server.standin
        headers = {name.lower(): value for name, value in self.headers.items()}
        path = urlsplit(self.path).path
        if "chunked" in headers.get("transfer-encoding", "").lower():
            standin.record(self.command, self.path, headers, b"")
            self._send(error_reply(411, "LENGTH_REQUIRED", "Send a Content-Length", None))
            self.close_connection = True
            return
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            standin.record(self.command, self.path, headers, b"")
            reply = error_reply(400, "INVALID_REQUEST", "Bad Content-Length")
            reply.close = True
            self._send(reply)
            return
        limit = standin.max_body_bytes(self.command, path)
        if length > limit:
            standin.record(self.command, self.path, headers, b"")
            reply = error_reply(
                413, "PAYLOAD_TOO_LARGE", f"The body is over the limit of {limit:,} bytes"
            )
            reply.close = True  # we did not read the body, so the connection cannot be reused
            self._send(reply)
            return
        body = self.rfile.read(length) if length else b""
        request = standin.record(self.command, self.path, headers, body)
        self._send(standin.dispatch(request))

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            payload = reply.body
            content_type = reply.content_type or "application/octet-stream"
        elif isinstance(reply.body, str):
            payload = reply.body.encode()
            content_type = reply.content_type or "text/plain"
        elif reply.body is None and reply.status < 300:
            payload = b""
            content_type = None
        else:
            payload = json.dumps(reply.body).encode()
            content_type = reply.content_type or "application/json"
        try:
            reason = HTTPStatus(reply.status).phrase
        except ValueError:
            reason = ""
        self.send_response(reply.status, reason)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if reply.writer is None:
            self.wfile.write(payload)
        elif not reply.writer(self.wfile, payload):
            self.close_connection = True  # short of Content-Length: the client must see it cut

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.standin.verbose:
            super().log_message(format, *args)
