"""A stand-in for Runflow: a real HTTP server that plays the API by the contract in
/work/shared/runflow-api.md, for the tests (over real sockets) and for trying the app by hand.

    python -m tests.runflow_standin --port 8765 --key demo-key [--broke-key KEY]

It is strict where the contract is clear (auth, the SAM 3 input schema, idempotency keys, the
asset flow) so mistakes in the app show up here rather than against the real service, and it has
knobs to misbehave on purpose (rate limits, outages, slow answers, scripted answers).

Layout: `RunflowStandin` holds all state behind one lock and answers requests in plain Python
(`dispatch` → one method per route → a `Reply`); `_Handler` only speaks HTTP.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import hashlib
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

SAM3_MODEL_ID = "meta/sam-3/image"
MAX_ASSET_BYTES = 52_428_800
# Generous enough for an inline data: URI of a large photo, small enough to stay a sane limit.
MAX_JSON_BODY_BYTES = 16 * 1024 * 1024
MAX_CLIENT_REF_CHARS = 255
MAX_LIST_LIMIT = 500
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "cancelled", "partial_succeeded"})

_BOOL_FIELDS = (
    "apply_mask",
    "return_multiple_masks",
    "include_scores",
    "include_boxes",
    "sync_mode",
)
_STR_FIELDS = ("prompt", "text_prompt")
_INPUT_FIELDS = frozenset(
    {"image_url", "max_masks", "output_format", "point_prompts", "box_prompts"}
    | set(_BOOL_FIELDS)
    | set(_STR_FIELDS)
)
_BODY_FIELDS = frozenset({"input", "callback_url", "metadata", "client_ref"})
_OUTPUT_FORMATS = ("jpeg", "png", "webp")
_DATA_URI = re.compile(r"data:(image/[A-Za-z0-9.+-]+);base64,(.*)", re.DOTALL)


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


# --- input validation ---------------------------------------------------------------------------


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


def _check_object_id(errors: _Errors, loc: list[Any], item: dict[str, Any]) -> None:
    value = item.get("object_id")
    if value is not None and errors.check_int([*loc, "object_id"], value) and value < 0:
        errors.add(
            [*loc, "object_id"], "Input should be greater than or equal to 0", "greater_than_equal"
        )


def _check_points(errors: _Errors, loc: list[Any], points: Any) -> None:
    if not isinstance(points, list):
        errors.add(loc, "Input should be a valid list", "list_type")
        return
    for index, point in enumerate(points):
        where = [*loc, index]
        if not errors.check_dict(where, point):
            continue
        errors.check_keys(where, point, ("x", "y", "label"), ("x", "y", "label", "object_id"))
        for key in ("x", "y"):
            if key in point:
                errors.check_int([*where, key], point[key])
        if "label" in point:
            label = point["label"]
            if not (isinstance(label, int) and not isinstance(label, bool) and label in (0, 1)):
                errors.add([*where, "label"], "Input should be 0 or 1", "literal_error")
        _check_object_id(errors, where, point)


def _check_boxes(errors: _Errors, loc: list[Any], boxes: Any) -> None:
    if not isinstance(boxes, list):
        errors.add(loc, "Input should be a valid list", "list_type")
        return
    corners = ("x_min", "y_min", "x_max", "y_max")
    for index, box in enumerate(boxes):
        where = [*loc, index]
        if not errors.check_dict(where, box):
            continue
        errors.check_keys(where, box, corners, (*corners, "object_id"))
        ints = {k: box[k] for k in corners if k in box and errors.check_int([*where, k], box[k])}
        for low, high in (("x_min", "x_max"), ("y_min", "y_max")):
            if low in ints and high in ints and not ints[low] < ints[high]:
                errors.add(where, f"{low} must be less than {high}", "value_error")
        _check_object_id(errors, where, box)


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
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Set on stop, so a create held by `create_delay` ends at once.
        self._stopping = threading.Event()
        self.reset()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        host, port = self._server.server_address[:2]
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"runflow-standin:{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
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
            ("POST", r"/v1/asset-uploads", "_create_asset_upload", True),
            ("POST", r"/v1/asset-uploads/(?P<asset_id>[^/]+)/confirmations", "_confirm", True),
            # Presigned upload URL and public asset URL: no bearer key, like a storage bucket.
            ("PUT", r"/uploads/(?P<asset_id>[^/]+)", "_put_upload", False),
            ("GET", r"/assets/(?P<asset_id>[^/]+)", "_get_asset", False),
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
        if delay > 0:
            # The run exists; the answer is late (or lost, if the client gives up first).
            self._stopping.wait(delay)
        return reply

    def _validate_create(self, body: Any) -> list[dict[str, Any]]:
        errors = _Errors()
        if not errors.check_dict(["body"], body):
            return errors.items
        errors.check_keys([], body, ("input",), _BODY_FIELDS)
        if "input" in body and errors.check_dict(["input"], body["input"]):
            self._validate_input(errors, body["input"])
        callback_url = body.get("callback_url")
        if callback_url is not None and not (
            isinstance(callback_url, str) and callback_url.startswith(("https://", "http://"))
        ):
            errors.add(["callback_url"], "Input should be a valid URL", "url_parsing")
        metadata = body.get("metadata")
        if metadata is not None:
            errors.check_dict(["metadata"], metadata)
        client_ref = body.get("client_ref")
        if client_ref is not None:
            if not isinstance(client_ref, str):
                errors.add(["client_ref"], "Input should be a valid string", "string_type")
            elif len(client_ref) > MAX_CLIENT_REF_CHARS:
                errors.add(
                    ["client_ref"],
                    f"String should have at most {MAX_CLIENT_REF_CHARS} characters",
                    "string_too_long",
                )
        return errors.items

    def _validate_input(self, errors: _Errors, data: dict[str, Any]) -> None:
        errors.check_keys(["input"], data, ("image_url",), _INPUT_FIELDS)
        if "image_url" in data:
            self._validate_image_url(errors, data["image_url"])
        for name in _STR_FIELDS:
            if name in data and not isinstance(data[name], str):
                errors.add(["input", name], "Input should be a valid string", "string_type")
        for name in _BOOL_FIELDS:
            if name in data and not isinstance(data[name], bool):
                errors.add(["input", name], "Input should be a valid boolean", "bool_type")
        if "max_masks" in data and errors.check_int(["input", "max_masks"], data["max_masks"]):
            if data["max_masks"] < 1:
                errors.add(
                    ["input", "max_masks"],
                    "Input should be greater than or equal to 1",
                    "greater_than_equal",
                )
            elif data["max_masks"] > 32:
                errors.add(
                    ["input", "max_masks"],
                    "Input should be less than or equal to 32",
                    "less_than_equal",
                )
        if "output_format" in data and data["output_format"] not in _OUTPUT_FORMATS:
            errors.add(
                ["input", "output_format"], "Input should be 'jpeg', 'png' or 'webp'", "enum"
            )
        if "point_prompts" in data:
            _check_points(errors, ["input", "point_prompts"], data["point_prompts"])
        if "box_prompts" in data:
            _check_boxes(errors, ["input", "box_prompts"], data["box_prompts"])

    def _validate_image_url(self, errors: _Errors, url: Any) -> None:
        loc = ["input", "image_url"]
        if not isinstance(url, str):
            errors.add(loc, "Input should be a valid string", "string_type")
            return
        if url.startswith("https://"):
            if not urlsplit(url).netloc:
                errors.add(loc, "Input should be a valid URL", "url_parsing")
            return
        if url.startswith("data:"):
            match = _DATA_URI.fullmatch(url)
            if match is None:
                errors.add(
                    loc, "Data URI must look like data:image/<type>;base64,...", "url_parsing"
                )
                return
            try:
                decoded = base64.b64decode(match.group(2), validate=True)
            except (binascii.Error, ValueError):
                errors.add(loc, "Data URI is not valid base64", "value_error")
                return
            if not decoded:
                errors.add(loc, "Data URI holds no data", "value_error")
            return
        if url.startswith("runflow://assets/"):
            asset_id = url.removeprefix("runflow://assets/")
        elif url.startswith("http://") and self._is_own_url(url):
            # Our own asset URLs, or anything else served here (tests may point at it).
            path = urlsplit(url).path
            if not path.startswith("/assets/"):
                return
            asset_id = path.removeprefix("/assets/")
        else:
            errors.add(
                loc,
                "Input should be an https:// URL, a data:image/...;base64, URI or an asset URL",
                "url_scheme",
            )
            return
        with self._lock:
            asset = self._assets.get(asset_id)
            if asset is None or not asset.confirmed:
                errors.add(loc, f"Unknown or unconfirmed asset {asset_id!r}", "value_error")

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

    def _list_runs(self, request: RecordedRequest, key: str) -> Reply:
        limit_text = (request.query.get("limit") or ["100"])[0]
        cursor = (request.query.get("cursor") or [None])[0]
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
        return Reply(200, {"data": page, "next_cursor": next_cursor, "has_more": more})

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
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.standin.verbose:
            super().log_message(format, *args)


# --- by hand ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a Runflow stand-in for trying sam3web.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", action="append", help="a valid API key (repeatable)")
    parser.add_argument("--broke-key", action="append", default=[], help="a key with no credit")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    keys = args.key or ["demo-key"]
    standin = RunflowStandin(
        api_keys=keys,
        broke_keys=args.broke_key,
        host=args.host,
        port=args.port,
        verbose=not args.quiet,
    )
    standin.start()
    print(f"Runflow stand-in listening on {standin.base_url}", flush=True)
    print("Point the app at it with:", flush=True)
    print(f"  RUNFLOW_BASE_URL={standin.base_url} RUNFLOW_API_KEY={keys[0]}", flush=True)
    print("Ctrl+C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
