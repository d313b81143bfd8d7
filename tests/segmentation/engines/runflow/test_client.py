"""The Runflow client against the stand-in over a real socket: what it sends, how it retries,
and how it reports every kind of failure. Sleeps are recorded instead of slept, so retries are
instant while the delays the client chose can still be checked."""

from __future__ import annotations

import email.utils
import json
import logging
import pickle
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from runflow_standin.server import RunflowStandin
from segmentation.engines.runflow.client import (
    MAX_ASSET_BYTES,
    SAM3_MODEL_PATH,
    RunflowClient,
    RunflowError,
    encode_json,
    get_client,
    parse_retry_after,
    parse_run_list,
)
from tests.sample_images import IMAGES

CAT = IMAGES / "cat.jpg"
IMAGE_URL = "https://images.example/cat.jpg"
INPUT = {"image_url": IMAGE_URL, "prompt": "cat", "include_scores": True}


class Sleeps(list[float]):
    """Stands in for time.sleep: remembers each delay and returns at once."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_client(standin: RunflowStandin, sleeps: Sleeps) -> Iterator[Callable[..., RunflowClient]]:
    clients: list[RunflowClient] = []

    def make(**overrides: Any) -> RunflowClient:
        options: dict[str, Any] = {
            "base_url": standin.base_url,
            "api_key": "test-key",
            "timeout": 5.0,
            "max_attempts": 5,
            "backoff_base": 0.5,
            "backoff_max": 30.0,
            "sleep": sleeps,
        }
        options.update(overrides)
        client = RunflowClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., RunflowClient]) -> RunflowClient:
    return make_client()


def create(client: RunflowClient, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("input", INPUT)
    kwargs.setdefault("idempotency_key", str(uuid.uuid4()))
    return client.create_run(**kwargs)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- creating a run -------------------------------------------------------------------------


def test_it_creates_a_run_and_sends_exact_body_and_headers(
    standin: RunflowStandin, client: RunflowClient
) -> None:
    key = str(uuid.uuid4())
    metadata = {"note": "café ✓", "n": 1}
    run = client.create_run(
        input=INPUT,
        idempotency_key=key,
        client_ref=key,
        callback_url="https://app.example/runflow/callback",
        metadata=metadata,
    )

    assert run["status_code"] == "queued"
    assert uuid.UUID(run["id"])
    assert run["client_ref"] == key
    assert standin.runs[run["id"]]["input"] == INPUT
    [call] = standin.create_calls()
    assert call.path == SAM3_MODEL_PATH
    assert call.headers["authorization"] == "Bearer test-key"
    assert call.headers["idempotency-key"] == key
    assert call.headers["content-type"] == "application/json"
    assert call.headers["accept"] == "application/json"
    assert call.headers["user-agent"] == "sam3web/0.1"
    expected = {
        "input": INPUT,
        "callback_url": "https://app.example/runflow/callback",
        "metadata": metadata,
        "client_ref": key,
    }
    assert call.body == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    assert "café ✓".encode() in call.body  # UTF-8, not \\u escapes
    assert client.last_attempts == 1


def test_it_leaves_out_keys_that_are_none(standin: RunflowStandin, client: RunflowClient) -> None:
    create(client)

    [call] = standin.create_calls()
    assert list(call.json) == ["input"]


def test_it_refuses_a_wrong_key_at_once(
    standin: RunflowStandin, make_client: Callable[..., RunflowClient], sleeps: Sleeps
) -> None:
    client = make_client(api_key="wrong-key")

    with pytest.raises(RunflowError) as caught:
        create(client)

    error = caught.value
    assert (error.status_code, error.code, error.attempts) == (401, "UNAUTHORIZED", 1)
    assert error.retryable is False
    assert error.summary() == "Runflow refused the API key (401 UNAUTHORIZED): Invalid API key"
    assert len(standin.create_calls()) == 1
    assert sleeps == []
    for text in (str(error), repr(error), repr(client)):
        assert "wrong-key" not in text


def test_it_reports_missing_credit(
    standin: RunflowStandin, make_client: Callable[..., RunflowClient]
) -> None:
    with pytest.raises(RunflowError) as caught:
        create(make_client(api_key="broke-key"))

    error = caught.value
    assert (error.status_code, error.code, error.retryable) == (402, "INSUFFICIENT_CREDIT", False)
    assert error.summary().startswith("Runflow needs more credit (402 INSUFFICIENT_CREDIT): ")
    assert standin.runs == {}


def test_it_refuses_to_call_without_a_key(
    standin: RunflowStandin, make_client: Callable[..., RunflowClient]
) -> None:
    with pytest.raises(RunflowError) as caught:
        create(make_client(api_key=""))

    assert caught.value.code == "NOT_CONFIGURED"
    assert "RUNFLOW_API_KEY" in caught.value.summary()
    assert standin.requests == []


def test_it_reports_validation_errors_field_by_field(
    standin: RunflowStandin, client: RunflowClient, sleeps: Sleeps
) -> None:
    bad = {
        "image_url": IMAGE_URL,
        "max_masks": 99,
        "output_format": "gif",
        "point_prompts": [{"x": 3, "y": 4, "label": 2}],
    }

    with pytest.raises(RunflowError) as caught:
        create(client, input=bad)

    error = caught.value
    assert (error.status_code, error.code, error.attempts) == (422, "VALIDATION_ERROR", 1)
    assert error.retryable is False
    assert [item["loc"] for item in error.errors or []] == [
        ["input", "max_masks"],
        ["input", "output_format"],
        ["input", "point_prompts", 0, "label"],
    ]
    # The stand-in words them as sam3web's own schema does; the client only reads them.
    max_masks = "max_masks must be less than or equal to 32 (got 99)."
    output_format = 'output_format must be one of png, jpeg, webp, not "gif".'
    label = "Point 1: label must be 1 (include) or 0 (exclude), not 2."
    assert error.field_messages() == [
        f"input.max_masks: {max_masks}",
        f"input.output_format: {output_format}",
        f"input.point_prompts.0.label: {label}",
    ]
    assert error.summary().startswith(
        "Runflow rejected the input (422 VALIDATION_ERROR): Input validation failed — "
        f"input.max_masks: {max_masks}; "
    )
    assert len(standin.create_calls()) == 1
    assert sleeps == []


# --- retries --------------------------------------------------------------------------------


def test_it_retries_429_honouring_retry_after_with_the_same_bytes_and_key(
    standin: RunflowStandin, client: RunflowClient, sleeps: Sleeps
) -> None:
    standin.rate_limit_next = 2
    standin.retry_after = "2"
    key = str(uuid.uuid4())

    run = create(client, idempotency_key=key)

    calls = standin.create_calls()
    assert len(calls) == 3
    assert client.last_attempts == 3
    assert sleeps == [2.0, 2.0]
    assert {c.headers["idempotency-key"] for c in calls} == {key}
    assert {c.body for c in calls} == {calls[0].body}
    assert list(standin.runs) == [run["id"]]


def test_it_honours_retry_after_given_as_a_date(
    standin: RunflowStandin, client: RunflowClient, sleeps: Sleeps
) -> None:
    standin.rate_limit_next = 1
    standin.retry_after = email.utils.formatdate(time.time() + 10, usegmt=True)

    create(client)

    [slept] = sleeps
    assert 8.0 <= slept <= 10.0  # whole seconds in the header, and a moment has passed


def test_it_caps_retry_after_at_backoff_max(
    standin: RunflowStandin, make_client: Callable[..., RunflowClient], sleeps: Sleeps
) -> None:
    standin.rate_limit_next = 1
    standin.retry_after = "120"

    create(make_client(backoff_max=5.0))

    assert sleeps == [5.0]


def test_it_backs_off_with_jitter_when_429_has_no_retry_after(
    standin: RunflowStandin, make_client: Callable[..., RunflowClient], sleeps: Sleeps
) -> None:
    standin.rate_limit_next = 3
    client = make_client(backoff_base=1.0, backoff_max=3.0)

    create(client)

    assert len(sleeps) == 3
    for retry, slept in enumerate(sleeps, start=1):
        assert 0.0 <= slept <= min(3.0, 1.0 * 2 ** (retry - 1))
    # Full jitter: many clients failing together must not all come back at the same moment.
    delays = {client.backoff_delay(3) for _ in range(50)}
    assert len(delays) > 40
    assert all(0.0 <= d <= 3.0 for d in delays)


def test_it_gives_up_after_max_attempts_of_503(
    standin: RunflowStandin, client: RunflowClient, sleeps: Sleeps
) -> None:
    standin.unavailable_next = 10

    with pytest.raises(RunflowError) as caught:
        create(client)

    error = caught.value
    assert (error.status_code, error.code, error.attempts) == (503, "MODEL_UNAVAILABLE", 5)
    assert error.retryable is True
    assert error.summary().startswith(
        "Runflow was unavailable after 5 attempts (503 MODEL_UNAVAILABLE): "
    )
    assert len(standin.create_calls()) == 5
    assert len(sleeps) == 4
    assert standin.runs == {}


def test_it_recovers_from_503_before_the_attempts_run_out(
    standin: RunflowStandin, client: RunflowClient
) -> None:
    standin.unavailable_next = 2

    run = create(client)

    assert len(standin.create_calls()) == 3
    assert list(standin.runs) == [run["id"]]


def test_it_retries_network_errors_then_gives_up(
    make_client: Callable[..., RunflowClient], sleeps: Sleeps
) -> None:
    client = make_client(base_url=f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(RunflowError) as caught:
        create(client, client_ref="ref-1")

    error = caught.value
    assert (error.status_code, error.code, error.attempts) == (None, "NETWORK_ERROR", 5)
    assert error.retryable is True
    assert error.summary().startswith("Runflow was unreachable after 5 attempts: could not connect")
    assert len(sleeps) == 4


def test_a_lost_answer_is_retried_with_the_same_key_and_creates_one_run(
    standin: RunflowStandin, make_client: Callable[..., RunflowClient], sleeps: Sleeps
) -> None:
    # The first answer comes after the client gave up; the retry gets the replayed 201.
    standin.create_delay = 2.0
    client = make_client(timeout=0.3)
    key = str(uuid.uuid4())

    run = create(client, idempotency_key=key)

    assert list(standin.runs) == [run["id"]]
    calls = standin.create_calls()
    assert len(calls) == 2
    assert {c.headers["idempotency-key"] for c in calls} == {key}
    assert calls[0].body == calls[1].body
    assert len(sleeps) == 1


def test_a_lost_answer_is_found_by_client_ref_before_creating_again(
    standin: RunflowStandin, make_client: Callable[..., RunflowClient]
) -> None:
    # Runflow honouring Idempotency-Key for single runs is a guess: look before retrying.
    standin.create_delay = 2.0
    client = make_client(timeout=0.3)
    local_id = str(uuid.uuid4())

    run = create(client, idempotency_key=local_id, client_ref=local_id)

    assert [r["id"] for r in standin.runs_for_client_ref(local_id)] == [run["id"]]
    assert len(standin.create_calls()) == 1
    assert [r.path for r in standin.requests if r.method == "GET"] == ["/v1/runs"]


def test_it_looks_for_the_run_after_each_5xx_when_it_has_a_client_ref(
    standin: RunflowStandin, client: RunflowClient
) -> None:
    standin.unavailable_next = 2

    run = create(client, client_ref="local-1")

    assert [r.method for r in standin.requests] == ["POST", "GET", "POST", "GET", "POST"]
    assert standin.runs_for_client_ref("local-1") == [standin.runs[run["id"]]]
    assert client.last_attempts == 3  # the lookups are not counted as attempts


def test_it_honours_retry_after_on_a_503_too(
    standin: RunflowStandin, client: RunflowClient, sleeps: Sleeps
) -> None:
    standin.scripted = [
        (503, {"code": "MODEL_UNAVAILABLE", "message": "busy"}, {"Retry-After": "3"})
    ]

    create(client)

    assert sleeps == [3.0]


def test_it_reports_a_conflict_when_a_key_is_reused_with_another_body(
    standin: RunflowStandin, client: RunflowClient
) -> None:
    key = str(uuid.uuid4())
    first = create(client, idempotency_key=key)

    with pytest.raises(RunflowError) as caught:
        create(client, idempotency_key=key, input={**INPUT, "prompt": "dog"})

    error = caught.value
    assert (error.status_code, error.code, error.attempts) == (409, "CONFLICT", 1)
    assert error.retryable is False
    assert error.summary().startswith("Runflow reported a conflict (409 CONFLICT): ")
    assert list(standin.runs) == [first["id"]]
    # The same key with the same body replays the first run.
    assert create(client, idempotency_key=key)["id"] == first["id"]


def test_it_logs_retries_without_the_key(
    standin: RunflowStandin, client: RunflowClient, caplog: pytest.LogCaptureFixture
) -> None:
    standin.rate_limit_next = 1
    with caplog.at_level(logging.DEBUG, logger="segmentation.runflow"):
        create(client)

    assert "429 RATE_LIMITED" in caplog.text
    assert "test-key" not in caplog.text


# --- odd answers ----------------------------------------------------------------------------


def test_it_tolerates_an_html_502(
    standin: RunflowStandin, client: RunflowClient, sleeps: Sleeps
) -> None:
    standin.scripted = [(502, "<html><body><h1>502 Bad Gateway</h1></body></html>")] * 5

    with pytest.raises(RunflowError) as caught:
        create(client)

    error = caught.value
    assert (error.status_code, error.code, error.message) == (502, "HTTP_502", "Bad Gateway")
    assert (error.attempts, error.retryable, error.errors) == (5, True, None)
    assert error.summary() == "Runflow was unavailable after 5 attempts (502 HTTP_502): Bad Gateway"


def test_it_gets_through_after_one_html_502(standin: RunflowStandin, client: RunflowClient) -> None:
    standin.scripted = [(502, "<html>Bad Gateway</html>")]

    run = create(client)

    assert list(standin.runs) == [run["id"]]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (201, ["not", "an", "object"], "expected a JSON object, got list"),
        (201, {"status_code": "queued"}, "the created run has no id"),
        (200, "<html>OK</html>", "the answer is not JSON (text/html)"),
    ],
)
def test_it_reports_a_2xx_it_cannot_read(
    standin: RunflowStandin, client: RunflowClient, status: int, body: Any, message: str
) -> None:
    standin.scripted = [(status, body)]

    with pytest.raises(RunflowError) as caught:
        create(client)

    error = caught.value
    assert (error.code, error.status_code, error.message) == ("BAD_RESPONSE", status, message)
    assert error.retryable is False
    assert len(standin.create_calls()) == 1


def test_it_finds_the_run_behind_an_unreadable_201(
    standin: RunflowStandin, client: RunflowClient
) -> None:
    first = create(client, client_ref="local-7")
    standin.scripted = [(201, "<html>created</html>")]

    assert create(client, client_ref="local-7")["id"] == first["id"]


@pytest.mark.parametrize(
    ("status", "body", "code", "message", "fields"),
    [
        (400, {"error": {"code": "BAD_THING", "message": "nope"}}, "BAD_THING", "nope", []),
        (403, {"detail": "Not for you"}, "HTTP_403", "Not for you", []),
        (
            422,
            {"detail": [{"loc": ["body", "input", "prompt"], "msg": "too long", "type": "x"}]},
            "HTTP_422",
            "Input validation failed",
            ["body.input.prompt: too long"],
        ),
        (
            422,
            {
                "code": "VALIDATION_ERROR",
                "message": "Bad input",
                "errors": [
                    "plain words",
                    {"field": "prompt", "message": "too long"},
                    {"path": "/input/max_masks", "message": "too big"},
                    {"prompt": ["required", "a string"]},
                    {"weird": 1},
                ],
            },
            "VALIDATION_ERROR",
            "Bad input",
            [
                "plain words",
                "prompt: too long",
                "input.max_masks: too big",
                "prompt: required",
                "prompt: a string",
                '{"weird": 1}',
            ],
        ),
        (418, b"", "HTTP_418", "I'm a Teapot", []),
    ],
)
def test_it_reads_other_error_shapes(
    standin: RunflowStandin,
    client: RunflowClient,
    status: int,
    body: Any,
    code: str,
    message: str,
    fields: list[str],
) -> None:
    standin.scripted = [(status, body)]

    with pytest.raises(RunflowError) as caught:
        create(client)

    error = caught.value
    assert (error.status_code, error.code, error.message) == (status, code, message)
    assert error.field_messages() == fields
    assert error.attempts == 1


# --- reading runs ---------------------------------------------------------------------------


def test_it_gets_a_run(standin: RunflowStandin, client: RunflowClient) -> None:
    run = create(client)
    standin.set_run_status(run["id"], "running")

    fetched = client.get_run(run["id"])

    assert fetched["id"] == run["id"]
    assert fetched["status_code"] == "running"


def test_it_reports_a_missing_run_without_retrying(
    client: RunflowClient, sleeps: Sleeps, standin: RunflowStandin
) -> None:
    with pytest.raises(RunflowError) as caught:
        client.get_run("../auth/me")  # quoted into one path segment, never another endpoint

    error = caught.value
    assert (error.status_code, error.code, error.attempts) == (404, "RUN_NOT_FOUND", 1)
    assert sleeps == []
    assert standin.requests[0].path == "/v1/runs/..%2Fauth%2Fme"


def test_it_finds_a_run_by_client_ref_pages_back(
    standin: RunflowStandin, client: RunflowClient
) -> None:
    oldest = create(client, client_ref="the-oldest")
    for n in range(30):
        create(client, client_ref=f"ref-{n}")

    found = client.find_run_by_client_ref("the-oldest", max_pages=4, page_size=10)
    assert found is not None and found["id"] == oldest["id"]
    assert client.find_run_by_client_ref("the-oldest", max_pages=3, page_size=10) is None
    assert client.find_run_by_client_ref("nobody") is None
    assert standin.requests[-1].query["limit"] == ["25"]


# --- assets ---------------------------------------------------------------------------------


def test_it_uploads_an_asset_and_the_run_can_use_it(
    standin: RunflowStandin, client: RunflowClient
) -> None:
    data = CAT.read_bytes()

    url = client.upload_asset(data=data, filename="cat.jpg", mime_type="image/jpeg")

    assert url.startswith(f"{standin.base_url}/assets/")
    assert httpx.get(url).content == data
    slot, put, confirm = standin.requests[:3]
    assert (slot.method, slot.path) == ("POST", "/v1/asset-uploads")
    assert slot.json == {"filename": "cat.jpg", "mime_type": "image/jpeg", "size_bytes": len(data)}
    assert put.method == "PUT"
    assert "authorization" not in put.headers  # the upload URL is presigned
    assert put.headers["content-type"] == "image/jpeg"
    assert put.body == data
    assert confirm.path.endswith("/confirmations")
    assert confirm.headers["authorization"] == "Bearer test-key"
    run = create(client, input={"image_url": url, "prompt": "cat"})
    assert standin.runs[run["id"]]["input"]["image_url"] == url


def test_it_retries_a_failed_upload_put(
    standin: RunflowStandin, client: RunflowClient, sleeps: Sleeps
) -> None:
    standin.upload_fail_next = 2

    url = client.upload_asset(data=b"\x89PNG...", filename="a.png", mime_type="image/png")

    assert [r.method for r in standin.requests] == ["POST", "PUT", "PUT", "PUT", "POST"]
    assert httpx.get(url).content == b"\x89PNG..."
    assert len(sleeps) == 2


def test_it_gives_up_on_an_upload_put_that_keeps_failing(
    standin: RunflowStandin, client: RunflowClient
) -> None:
    standin.upload_fail_next = 10

    with pytest.raises(RunflowError) as caught:
        client.upload_asset(data=b"abc", filename="a.png", mime_type="image/png")

    assert (caught.value.status_code, caught.value.attempts) == (503, 5)
    assert "sig=" not in caught.value.summary()


def test_it_refuses_an_upload_over_the_limit_before_sending(
    standin: RunflowStandin, client: RunflowClient
) -> None:
    with pytest.raises(RunflowError) as caught:
        client.upload_asset(
            data=bytes(MAX_ASSET_BYTES + 1), filename="huge.png", mime_type="image/png"
        )

    error = caught.value
    assert (error.code, error.status_code, error.retryable) == ("ASSET_TOO_LARGE", None, False)
    assert "52,428,800" in error.summary()
    assert standin.requests == []


def test_it_falls_back_to_a_runflow_asset_url() -> None:
    # The confirmation answer's `url` is documented loosely; without it the id still works.
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/asset-uploads":
            return httpx.Response(201, json={"id": "a1", "upload_url": "https://b.example/u"})
        if request.method == "PUT":
            return httpx.Response(200)
        return httpx.Response(201, json={"id": "a1"})

    with RunflowClient(
        base_url="https://api.example", api_key="k", transport=httpx.MockTransport(answer)
    ) as client:
        url = client.upload_asset(data=b"abc", filename="a.png", mime_type="image/png")

    assert url == "runflow://assets/a1"


# --- configuration and helpers --------------------------------------------------------------


def test_get_client_reads_settings_when_called(
    standin: RunflowStandin, settings: Any, sleeps: Sleeps
) -> None:
    settings.RUNFLOW_BASE_URL = standin.base_url
    settings.RUNFLOW_API_KEY = "test-key"
    settings.RUNFLOW_TIMEOUT = 7.0
    settings.RUNFLOW_MAX_ATTEMPTS = 2
    settings.RUNFLOW_BACKOFF_BASE = 0.1
    settings.RUNFLOW_BACKOFF_MAX = 1.0

    with get_client() as client:
        assert (client.base_url, client.timeout, client.max_attempts) == (standin.base_url, 7.0, 2)
        assert (client.backoff_base, client.backoff_max) == (0.1, 1.0)
        with pytest.raises(RunflowError) as caught:  # the key was taken: the run is unknown
            client.get_run("no-such-run")
        assert caught.value.code == "RUN_NOT_FOUND"
        assert "test-key" not in repr(client)


def test_errors_survive_pickling() -> None:
    error = RunflowError(code="CONFLICT", message="m", status_code=409, errors=["x"], attempts=1)

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.code, copy.status_code, copy.errors, str(copy)) == (
        "CONFLICT",
        409,
        ["x"],
        str(error),
    )


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()

    assert parse_retry_after(header, now=now) == seconds


@pytest.mark.parametrize(
    ("payload", "cursor"),
    [
        ([{"id": "a"}], None),
        ({"data": [{"id": "a"}], "next_cursor": "c1"}, "c1"),
        ({"items": [{"id": "a"}], "cursor": "c2"}, "c2"),
        ({"runs": [{"id": "a"}], "next": "https://api.example/v1/runs?cursor=c3&limit=2"}, "c3"),
        ({"results": [{"id": "a"}, "junk"], "next": None}, None),
        ({"data": [{"id": "a"}], "pagination": {"next_cursor": "c4"}}, "c4"),
    ],
)
def test_parse_run_list_accepts_several_shapes(payload: Any, cursor: str | None) -> None:
    assert parse_run_list(payload) == ([{"id": "a"}], cursor)


@pytest.mark.parametrize("payload", [{"nothing": []}, "text", None, {"data": "x"}])
def test_parse_run_list_refuses_what_is_not_a_list(payload: Any) -> None:
    with pytest.raises(RunflowError) as caught:
        parse_run_list(payload)
    assert caught.value.code == "BAD_RESPONSE"


def test_encode_json_is_compact_utf8_and_refuses_nan() -> None:
    assert encode_json({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    with pytest.raises(ValueError):
        encode_json({"a": float("nan")})
