"""The only module that speaks HTTP to Runflow (the contract: docs/runflow-api.md).

One method per API call, JSON in and out, and one exception type, `RunflowError`, for every way a
call can fail. Retries live here, so callers never loop: 429, 5xx and network errors are retried
with exponential backoff and full jitter; every other refusal is final at once.

Creating a run must never create two provider runs for one local run. Every attempt of one create
sends the same bytes with the same `Idempotency-Key`, and when an attempt failed in a way that may
have created the run anyway (the answer was lost, or a 5xx came back), the client first looks for a
run carrying our `client_ref` before it tries again, because Runflow honouring the key for single
runs is only a guess.

The API key goes into the Authorization header and nowhere else: not into messages, logs or reprs.
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any, Self
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

SAM3_MODEL_PATH = "/v1/models/meta/sam-3/image/runs"
RUNS_PATH = "/v1/runs"
ASSET_UPLOADS_PATH = "/v1/asset-uploads"

# Runflow's documented limit for one asset (50 MiB).
MAX_ASSET_BYTES = 52_428_800
# The documented maximum page size of GET /v1/runs.
MAX_LIST_LIMIT = 500
USER_AGENT = "sam3web/0.1"
JSON_TYPE = "application/json"

# Failures after which the request certainly never reached Runflow: nothing can have been created.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures that are our own mistake (a bad URL, a broken request), not a passing network problem.
_NOT_RETRYABLE_TRANSPORT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


class RunflowError(Exception):
    """Runflow refused a call, answered nonsense, or could not be reached.

    `code` is Runflow's stable code when it sent one, else ours: NETWORK_ERROR (no answer),
    BAD_RESPONSE (a 2xx we cannot read), HTTP_<status> (an error without a readable body),
    NOT_CONFIGURED (no API key), ASSET_TOO_LARGE (refused before sending)."""

    def __init__(
        self,
        *,
        code: str,
        message: str,
        status_code: int | None = None,
        errors: list[Any] | None = None,
        attempts: int = 0,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        # Seconds Runflow asked us to wait (Retry-After) on its last answer, when it said.
        self.retry_after = retry_after
        self.code = code
        self.message = message
        self.errors = errors
        self.attempts = attempts
        self.retryable = retryable
        super().__init__(self.summary())

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (
            f"RunflowError(status_code={self.status_code!r}, code={self.code!r}, "
            f"message={self.message!r}, attempts={self.attempts!r}, retryable={self.retryable!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only __init__ would break the default pickling/copying of exceptions.
        return (_rebuild_error, (self.__dict__.copy(),))

    def summary(self) -> str:
        """One line for a person: what went wrong, Runflow's code, and its own words."""
        if self.code == "NETWORK_ERROR":
            head = f"Runflow was unreachable after {_plural(self.attempts, 'attempt')}"
            return _one_line(f"{head}: {self.message}")
        if self.status_code is None:
            head = _LOCAL_HEADS.get(self.code, "Runflow call failed")
            return _one_line(f"{head} ({self.code}): {self.message}")
        status = self.status_code
        if status == 429:
            head = f"Runflow kept rate-limiting after {_plural(self.attempts, 'attempt')}"
        elif status >= 500:
            head = f"Runflow was unavailable after {_plural(self.attempts, 'attempt')}"
        elif self.code == "BAD_RESPONSE":
            head = "Runflow sent an answer we could not read"
        else:
            head = _HEADS_BY_STATUS.get(status, "Runflow refused the request")
        text = f"{head} ({status} {self.code}): {self.message}"
        details = self.field_messages()
        if details:
            text += " — " + "; ".join(details)
        return _one_line(text)

    def field_messages(self) -> list[str]:
        """Readable lines from `errors`, whatever shape its items have (undocumented)."""
        lines: list[str] = []
        for item in self.errors or []:
            lines.extend(_describe_error_item(item))
        return lines


_HEADS_BY_STATUS = {
    400: "Runflow rejected the request",
    401: "Runflow refused the API key",
    402: "Runflow needs more credit",
    403: "Runflow denied permission",
    404: "Runflow could not find it",
    409: "Runflow reported a conflict",
    413: "Runflow refused the request as too large",
    422: "Runflow rejected the input",
}
_LOCAL_HEADS = {
    "NOT_CONFIGURED": "Runflow is not configured",
    "ASSET_TOO_LARGE": "The file is too large for Runflow",
    "BAD_RESPONSE": "Runflow sent an answer we could not read",
}


def _rebuild_error(state: dict[str, Any]) -> RunflowError:
    error = RunflowError.__new__(RunflowError)
    error.__dict__.update(state)
    Exception.__init__(error, error.summary())
    return error


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_LOCATION_KEYS = ("loc", "location", "field", "path", "param", "parameter", "name", "source")
_TEXT_KEYS = ("msg", "message", "detail", "description", "error", "reason")


def _location(item: Mapping[str, Any]) -> Any:
    for key in _LOCATION_KEYS:
        value = item.get(key)
        if isinstance(value, Mapping):  # JSON:API style {"source": {"pointer": "/input/x"}}
            value = value.get("pointer") or value.get("parameter")
        if value not in (None, "", []):
            return value
    return None


def _loc_parts(where: Any) -> list[Any]:
    if where is None:
        return []
    if isinstance(where, list | tuple):
        return list(where)
    text = str(where)
    if text.startswith("/"):  # a JSON pointer
        return [p for p in text.split("/") if p]
    return [p for p in text.split(".") if p] if "." in text else [text]


def _describe_error_item(item: Any) -> list[str]:
    if item is None:
        return []
    if isinstance(item, str):
        return [item.strip()] if item.strip() else []
    if isinstance(item, list | tuple):
        return [line for sub in item for line in _describe_error_item(sub)]
    if not isinstance(item, Mapping):
        return [str(item)]
    where = _location(item)
    text = next((item[k] for k in _TEXT_KEYS if item.get(k) not in (None, "")), None)
    if where is None and text is None:
        # Django REST framework style {"field": ["message", ...]}, else show it as it is.
        if item and all(isinstance(v, str | list) for v in item.values()):
            return [
                f"{key}: {msg}"
                for key, value in item.items()
                for msg in (value if isinstance(value, list) else [value])
            ]
        return [json.dumps(item, ensure_ascii=False, sort_keys=True, default=str)]
    if text is None:
        text = item.get("type") or "invalid"
    if not isinstance(text, str):
        text = json.dumps(text, ensure_ascii=False, default=str)
    loc = ".".join(str(p) for p in _loc_parts(where))
    return [f"{loc}: {text}" if loc else text]


def encode_json(value: Any) -> bytes:
    """The exact bytes we send: compact, UTF-8, no NaN (not JSON; better to fail here)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def build_create_body(
    *,
    input: dict[str, Any],
    client_ref: str | None = None,
    callback_url: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of a create call, without the keys whose value is None."""
    body = {
        "input": input,
        "callback_url": callback_url,
        "metadata": metadata,
        "client_ref": client_ref,
    }
    return {key: value for key, value in body.items() if value is not None}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None if unusable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def parse_run_list(payload: Any) -> tuple[list[dict[str, Any]], str | None]:
    """(runs, next_cursor) from a bare list or an object holding the list under one of several
    names: Runflow documents ``items`` and ``next_pq``, but older pages and SDKs differ."""
    if isinstance(payload, list):
        items: Any = payload
        cursor: Any = None
    elif isinstance(payload, dict):
        items = next(
            (payload[k] for k in ("items", "data", "runs", "results") if k in payload), None
        )
        if not isinstance(items, list):
            raise RunflowError(
                code="BAD_RESPONSE", message="the run list has no list of runs", status_code=200
            )
        holders = [payload]
        if isinstance(payload.get("pagination"), dict):
            holders.append(payload["pagination"])
        cursor = next(
            (
                h[k]
                for h in holders
                for k in ("next_pq", "next_cursor", "cursor", "next")
                if h.get(k) not in (None, "", False)
            ),
            None,
        )
    else:
        raise RunflowError(
            code="BAD_RESPONSE", message="the run list is not a list or object", status_code=200
        )
    return [run for run in items if isinstance(run, dict)], _cursor_value(cursor)


def _cursor_value(cursor: Any) -> str | None:
    if cursor is None or isinstance(cursor, bool):
        return None
    text = str(cursor)
    if text.startswith(("http://", "https://", "/")):
        # `next` given as a URL: the cursor is its query parameter.
        query = parse_qs(urlsplit(text).query)
        found = query.get("pq") or query.get("cursor")
        return found[0] if found else None
    return text or None


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~20 ms; the app builds one client per task, so share it.
    # httpx's own helper, so SSL_CERT_FILE / SSL_CERT_DIR are honoured as httpx would.
    return httpx.create_ssl_context()


class RunflowClient:
    """A Runflow API client. Cheap to build; build one per task and close it (or use `with`)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        # The latest call's HTTP attempts and final status, for the caller's records.
        self.last_attempts = 0
        self.last_status: int | None = None
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT, "Accept": JSON_TYPE},
            # A redirect on an API call is a misconfiguration to report, not to follow with a key.
            follow_redirects=False,
            transport=transport,
            verify=_ssl_context(),
        )

    def __repr__(self) -> str:
        return f"RunflowClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- API calls ------------------------------------------------------------------------

    def create_run(
        self,
        *,
        input: dict[str, Any],
        idempotency_key: str,
        client_ref: str | None = None,
        callback_url: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a SAM 3 run and return the run object Runflow answered (201).

        Pass the local run's UUID as `idempotency_key` (and as `client_ref`): with a client_ref
        the client can find a run whose creation answer was lost instead of creating another."""
        body = encode_json(
            build_create_body(
                input=input, client_ref=client_ref, callback_url=callback_url, metadata=metadata
            )
        )

        def recover() -> dict[str, Any] | None:
            return self._find_created_run(client_ref) if client_ref else None

        try:
            run = self._json_object(
                self._call(
                    "POST",
                    SAM3_MODEL_PATH,
                    body=body,
                    headers={"Idempotency-Key": idempotency_key},
                    recover=recover,
                )
            )
            if not run.get("id"):
                raise self._bad_response("the created run has no id")
        except RunflowError as error:
            # A 2xx we cannot read most likely means the run exists: look before giving up.
            if error.code == "BAD_RESPONSE" and (found := recover()) is not None:
                return found
            raise
        return run

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._json_object(self._call("GET", f"{RUNS_PATH}/{quote(run_id, safe='')}"))

    def find_run_by_client_ref(
        self, client_ref: str, *, max_pages: int = 5, page_size: int = 25
    ) -> dict[str, Any] | None:
        """The newest run created with this client_ref, among the newest
        `max_pages * page_size` runs.

        Runflow has no documented filter by client_ref, so this scans the newest runs; a run
        created moments ago is on the first page. Pages stay small because each run carries its
        input, and an inline image makes that input up to ~1.4 MB."""
        return self._scan_for_client_ref(
            client_ref, max_pages=max_pages, page_size=page_size, attempts=None
        )

    def upload_asset(self, *, data: bytes, filename: str, mime_type: str) -> str:
        """Upload a file through the asset flow and return the URL to pass as image_url."""
        size = len(data)
        if size > MAX_ASSET_BYTES:
            raise RunflowError(
                code="ASSET_TOO_LARGE",
                message=(
                    f"{filename} is {size:,} bytes; Runflow accepts at most {MAX_ASSET_BYTES:,} "
                    "bytes (50 MiB)"
                ),
            )
        slot = self._json_object(
            self._call(
                "POST",
                ASSET_UPLOADS_PATH,
                body=encode_json(
                    {"filename": filename, "mime_type": mime_type, "size_bytes": size}
                ),
            )
        )
        asset_id = slot.get("asset_id") or slot.get("id")
        upload_url = slot.get("upload_url")
        if not isinstance(asset_id, str | int) or not isinstance(upload_url, str) or not upload_url:
            raise self._bad_response("the asset upload answer has no asset_id or upload_url")
        asset_id = str(asset_id)
        if not upload_url.startswith(("https://", "http://", "/")):
            raise self._bad_response("the asset upload_url is not a URL")
        # The upload URL is presigned: it carries its own authority, so no Authorization header.
        self._call(
            "PUT",
            upload_url,
            body=data,
            content_type=mime_type,
            authenticated=False,
            expect_json=False,
        )
        asset = self._json_object(
            self._call(
                "POST",
                f"{ASSET_UPLOADS_PATH}/{quote(asset_id, safe='')}/confirmations",
                body=b"{}",
            )
        )
        url = asset.get("url")
        return url if isinstance(url, str) and url else f"runflow://assets/{asset_id}"

    # --- plumbing -------------------------------------------------------------------------

    def _find_created_run(self, client_ref: str) -> dict[str, Any] | None:
        """A quick look for a run whose creation answer we lost. Any failure just means
        "not found": the caller then retries the create with the same Idempotency-Key."""
        # The lookup is part of the create call: keep the create's own attempt count.
        attempts, status = self.last_attempts, self.last_status
        try:
            return self._scan_for_client_ref(client_ref, max_pages=2, page_size=25, attempts=1)
        except RunflowError as error:
            logger.info("run=%s event=lookup_by_ref_failed error=%s", client_ref, error)
            return None
        finally:
            self.last_attempts, self.last_status = attempts, status

    def _scan_for_client_ref(
        self, client_ref: str, *, max_pages: int, page_size: int, attempts: int | None
    ) -> dict[str, Any] | None:
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(max(1, max_pages)):
            payload = self._call(
                "GET", RUNS_PATH, params=_list_params(page_size, cursor), attempts=attempts
            )
            runs, cursor = parse_run_list(payload)
            for run in runs:
                if run.get("client_ref") == client_ref:
                    return run
            if cursor is None or cursor in seen:  # the end, or a server going round in circles
                return None
            seen.add(cursor)
        return None

    def _json_object(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._bad_response(f"expected a JSON object, got {type(value).__name__}")
        return value

    def _bad_response(self, message: str) -> RunflowError:
        """A 2xx whose content is not what the contract says (latest call's status)."""
        return RunflowError(
            code="BAD_RESPONSE",
            message=message,
            status_code=self.last_status,
            attempts=self.last_attempts,
        )

    def backoff_delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1 for the first): full jitter, so many clients
        that failed together do not all come back at the same moment."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (retry - 1))
        return random.uniform(0.0, max(0.0, ceiling))

    def _call(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        content_type: str = JSON_TYPE,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
        expect_json: bool = True,
        attempts: int | None = None,
        recover: Callable[[], dict[str, Any] | None] | None = None,
    ) -> Any:
        """Send one request with retries and return its parsed JSON body (None when
        `expect_json` is false). `recover` is asked, after a failure that may have taken effect,
        for the result of an earlier attempt; when it finds one, that is the answer."""
        if authenticated and not self._api_key:
            raise RunflowError(code="NOT_CONFIGURED", message="RUNFLOW_API_KEY is not set")
        send_headers = dict(headers or {})
        if body is not None:
            send_headers["Content-Type"] = content_type
        if authenticated:
            send_headers["Authorization"] = f"Bearer {self._api_key}"
        allowed = self.max_attempts if attempts is None else max(1, attempts)
        where = urlsplit(url).path  # never log a presigned URL's query: it is a credential

        for attempt in range(1, allowed + 1):
            self.last_attempts = attempt
            self.last_status = None
            wait: float | None = None
            try:
                response = self._http.request(
                    method, url, content=body, params=params, headers=send_headers
                )
            except httpx.TransportError as exc:
                error = RunflowError(
                    code="NETWORK_ERROR",
                    message=_describe_transport_error(exc, self.timeout),
                    attempts=attempt,
                    retryable=not isinstance(exc, _NOT_RETRYABLE_TRANSPORT),
                )
                may_have_taken_effect = not isinstance(exc, _NOT_SENT)
            except httpx.RequestError as exc:  # e.g. a body that fails to decode
                raise RunflowError(
                    code="BAD_RESPONSE", message=f"{type(exc).__name__}: {exc}", attempts=attempt
                ) from exc
            else:
                self.last_status = response.status_code
                if response.is_success:
                    return _parse_success(response, attempt) if expect_json else None
                error = _error_from_response(response, attempts=attempt)
                if error.retryable:  # 429, and 503 may carry Retry-After too (RFC 9110)
                    wait = parse_retry_after(response.headers.get("Retry-After"))
                    error.retry_after = wait
                may_have_taken_effect = response.status_code >= 500

            if recover is not None and may_have_taken_effect and error.retryable:
                found = recover()
                if found is not None:
                    logger.warning(
                        "Runflow %s %s: found the result of an earlier attempt after %s",
                        method,
                        where,
                        error.code,
                    )
                    return found
            if not error.retryable or attempt >= allowed:
                raise error
            delay = self.backoff_delay(attempt) if wait is None else min(wait, self.backoff_max)
            logger.warning(
                "Runflow %s %s failed (%s %s), attempt %d of %d; retrying in %.2f s",
                method,
                where,
                error.status_code or "-",
                error.code,
                attempt,
                allowed,
                delay,
            )
            self._sleep(delay)
        raise AssertionError("unreachable")  # the loop always returns or raises


def _list_params(limit: int, cursor: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": min(max(1, limit), MAX_LIST_LIMIT)}
    if cursor:
        params["pq"] = cursor  # Runflow's name for the page cursor
    return params


def _describe_transport_error(exc: httpx.TransportError, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "waiting for the answer",
            httpx.WriteTimeout: "sending",
            httpx.PoolTimeout: "waiting for a connection",
        }.get(type(exc), "talking")
        return f"timed out after {timeout:g} s while {phase}"
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({detail})"
    return f"{type(exc).__name__}: {detail}"


def _parse_success(response: httpx.Response, attempt: int) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        raise RunflowError(
            code="BAD_RESPONSE",
            message=f"the answer is not JSON ({_content_type(response) or 'no content type'})",
            status_code=response.status_code,
            attempts=attempt,
        ) from None


def _content_type(response: httpx.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip()


def _error_from_response(response: httpx.Response, *, attempts: int) -> RunflowError:
    """A RunflowError from an error answer, reading {"code","message","errors"} and the other
    shapes seen in the wild ({"error": {...}}, {"detail": ...}), or none at all (an HTML page
    from a proxy)."""
    status = response.status_code
    code: Any = None
    message: Any = None
    errors: Any = None
    try:
        payload = json.loads(response.content) if response.content else None
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        inner = payload.get("error")
        if isinstance(inner, dict):
            code = inner.get("code")
            message = inner.get("message")
            errors = inner.get("errors")
        elif isinstance(inner, str):
            message = inner
        code = payload.get("code") or code
        message = payload.get("message") or message
        errors = payload.get("errors") if payload.get("errors") is not None else errors
        detail = payload.get("detail")
        if isinstance(detail, str):
            message = message or detail
        elif isinstance(detail, list) and errors is None:
            errors = detail
    if errors is not None and not isinstance(errors, list):
        errors = [errors]
    if not isinstance(code, str) or not code:
        code = f"HTTP_{status}"
    if not isinstance(message, str) or not message:
        if errors:
            message = "Input validation failed" if status in (400, 422) else "Request failed"
        else:
            message = response.reason_phrase or f"HTTP {status}"
    return RunflowError(
        code=code,
        message=message,
        status_code=status,
        errors=errors,
        attempts=attempts,
        retryable=status == 429 or status >= 500,
    )


def get_client() -> RunflowClient:
    """A client configured from Django settings (read now, not at import time)."""
    return RunflowClient(
        base_url=settings.RUNFLOW_BASE_URL,
        api_key=settings.RUNFLOW_API_KEY,
        timeout=settings.RUNFLOW_TIMEOUT,
        max_attempts=settings.RUNFLOW_MAX_ATTEMPTS,
        backoff_base=settings.RUNFLOW_BACKOFF_BASE,
        backoff_max=settings.RUNFLOW_BACKOFF_MAX,
    )
