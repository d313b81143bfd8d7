"""The Runflow stand-in itself, spoken to with bare httpx: it must hold the app to the contract
(auth, the SAM 3 input schema, idempotency, the asset flow) and never fall over on bad input."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runflow_standin.server import MAX_ASSET_BYTES, RunflowStandin
from tests.sample_images import IMAGES, ROOT

CAT = IMAGES / "cat.jpg"
AUTH = {"Authorization": "Bearer test-key"}
RUNS = "/v1/models/meta/sam-3/image/runs"
GOOD_INPUT = {"image_url": "https://images.example/cat.jpg", "prompt": "cat"}


@pytest.fixture(scope="module")
def anon(_standin_server: RunflowStandin) -> Iterator[httpx.Client]:
    """A client without a key (asset URLs, auth tests). Shared: building one costs ~20 ms."""
    with httpx.Client(base_url=_standin_server.base_url) as client:
        yield client


@pytest.fixture(scope="module")
def http(_standin_server: RunflowStandin) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=_standin_server.base_url, headers=AUTH) as client:
        yield client


def create(http: httpx.Client, body: Any, **headers: str) -> httpx.Response:
    return http.post(RUNS, content=json.dumps(body), headers=headers)


def locs(response: httpx.Response) -> list[list[Any]]:
    return [item["loc"] for item in response.json()["errors"]]


# --- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/auth/me"), ("GET", "/v1/runs"), ("GET", "/v1/runs/x"), ("POST", RUNS)],
)
@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "Missing API key"),
        ("Bearer nope", "Invalid API key"),
        ("test-key", "Invalid API key"),
    ],
)
def test_it_wants_a_bearer_key_on_every_api_call(
    anon: httpx.Client, method: str, path: str, authorization: str | None, message: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = anon.request(method, path, headers=headers)

    assert response.status_code == 401
    assert response.json() == {"code": "UNAUTHORIZED", "message": message, "errors": None}


def test_it_tells_who_a_key_belongs_to(http: httpx.Client) -> None:
    response = http.get("/v1/auth/me")

    assert response.status_code == 200
    assert "test-key" not in response.text


def test_a_broke_key_cannot_create_runs(standin: RunflowStandin, anon: httpx.Client) -> None:
    response = anon.post(
        RUNS,
        json={"input": GOOD_INPUT},
        headers={"Authorization": "Bearer broke-key"},
    )

    assert response.status_code == 402
    assert response.json()["code"] == "INSUFFICIENT_CREDIT"
    assert standin.runs == {}


# --- creating runs ------------------------------------------------------------------------------


def test_it_creates_a_queued_run_with_every_documented_field(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    body = {
        "input": GOOD_INPUT,
        "metadata": {"team": "a"},
        "client_ref": "local-1",
        "callback_url": "https://app.example/cb",
    }

    response = create(http, body)

    assert response.status_code == 201
    run = response.json()
    assert run["status_code"] == "queued"
    assert run["created_at"].endswith("+00:00")
    for name in ("input", "metadata", "client_ref", "callback_url"):
        assert run[name] == body[name]
    for name in (
        "output",
        "duration_ms",
        "cost",
        "started_at",
        "completed_at",
        "failure_code",
        "failure_message",
        "failure_stage_code",
    ):
        assert run[name] is None
    assert standin.runs == {run["id"]: run}
    assert http.get(f"/v1/runs/{run['id']}").json() == run


def test_the_generic_model_path_works_too(standin: RunflowStandin, http: httpx.Client) -> None:
    assert (
        http.post("/v1/models/meta%2Fsam-3%2Fimage/runs", json={"input": GOOD_INPUT}).status_code
        == 201
    )
    response = http.post("/v1/models/meta/sam-2/image/runs", json={"input": GOOD_INPUT})
    assert (response.status_code, response.json()["code"]) == (404, "MODEL_NOT_FOUND")
    assert len(standin.create_calls()) == 2


def test_it_accepts_every_field_and_every_kind_of_image(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    inline = "data:image/jpeg;base64," + base64.b64encode(CAT.read_bytes()).decode()
    full = {
        "image_url": inline,
        "prompt": "cat",
        "text_prompt": "cat",
        "point_prompts": [
            {"x": 10, "y": 20, "label": 1},
            {"x": 5, "y": 5, "label": 0, "object_id": 2},
        ],
        "box_prompts": [{"x_min": 0, "y_min": 0, "x_max": 10, "y_max": 10, "object_id": 0}],
        "apply_mask": False,
        "return_multiple_masks": True,
        "max_masks": 32,
        "include_scores": True,
        "include_boxes": True,
        "sync_mode": False,
        "output_format": "webp",
    }
    assert create(http, {"input": full}).status_code == 201
    own = f"{standin.base_url}/static/cat.jpg"
    assert create(http, {"input": {"image_url": own}}).status_code == 201
    assert create(http, {"input": {"image_url": "https://x.example/a.png"}}).status_code == 201


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"image_url": None}, ["input", "image_url"]),
        ({"image_url": 7}, ["input", "image_url"]),
        ({"image_url": "http://images.example/cat.jpg"}, ["input", "image_url"]),
        ({"image_url": "ftp://images.example/cat.jpg"}, ["input", "image_url"]),
        ({"image_url": "data:image/png;base64,!!!not base64"}, ["input", "image_url"]),
        ({"image_url": "data:image/png;base64,"}, ["input", "image_url"]),
        ({"image_url": "data:text/plain;base64,aGk="}, ["input", "image_url"]),
        ({"image_url": "runflow://assets/nope"}, ["input", "image_url"]),
        ({"prompt": 3}, ["input", "prompt"]),
        ({"apply_mask": "true"}, ["input", "apply_mask"]),
        ({"include_scores": 1}, ["input", "include_scores"]),
        ({"max_masks": 0}, ["input", "max_masks"]),
        ({"max_masks": 33}, ["input", "max_masks"]),
        ({"max_masks": True}, ["input", "max_masks"]),
        ({"output_format": "gif"}, ["input", "output_format"]),
        ({"point_prompts": '[{"x": 1, "y": 1, "label": 1}]'}, ["input", "point_prompts"]),
        ({"point_prompts": [{"x": 1.5, "y": 1, "label": 1}]}, ["input", "point_prompts", 0, "x"]),
        ({"point_prompts": [{"x": 1, "y": 1, "label": 2}]}, ["input", "point_prompts", 0, "label"]),
        (
            {"point_prompts": [{"x": 1, "y": 1, "label": True}]},
            ["input", "point_prompts", 0, "label"],
        ),
        ({"point_prompts": [{"x": 1, "label": 1}]}, ["input", "point_prompts", 0, "y"]),
        (
            {"point_prompts": [{"x": 1, "y": 1, "label": 1, "z": 0}]},
            ["input", "point_prompts", 0, "z"],
        ),
        (
            {"point_prompts": [{"x": 1, "y": 1, "label": 1, "object_id": -1}]},
            ["input", "point_prompts", 0, "object_id"],
        ),
        ({"point_prompts": ["1,1"]}, ["input", "point_prompts", 0]),
        (
            {"box_prompts": [{"x_min": 5, "y_min": 0, "x_max": 5, "y_max": 9}]},
            ["input", "box_prompts", 0],
        ),
        (
            {"box_prompts": [{"x_min": 0, "y_min": 9, "x_max": 5, "y_max": 1}]},
            ["input", "box_prompts", 0],
        ),
        (
            {"box_prompts": [{"x_min": 0, "y_min": 0, "x_max": "5", "y_max": 9}]},
            ["input", "box_prompts", 0, "x_max"],
        ),
        ({"colour": "red"}, ["input", "colour"]),
    ],
)
def test_it_rejects_bad_input_like_the_real_service(
    standin: RunflowStandin, http: httpx.Client, change: dict[str, Any], loc: list[Any]
) -> None:
    response = create(http, {"input": {**GOOD_INPUT, **change}})

    assert response.status_code == 422
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert response.json()["message"] == "Input validation failed"
    assert loc in locs(response)
    assert all({"loc", "msg", "type"} <= set(item) for item in response.json()["errors"])
    assert standin.runs == {}


def test_it_takes_whole_numbers_written_as_floats(http: httpx.Client) -> None:
    # As pydantic's lax mode does: 3.0 is 3, and 1.5 is refused (above).
    points = [{"x": 10.0, "y": 20.0, "label": 1.0}]
    body = {"input": {**GOOD_INPUT, "max_masks": 3.0, "point_prompts": points}}
    assert create(http, body).status_code == 201


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["input"]),
        ([], ["body"]),
        ({"input": "cat"}, ["input"]),
        ({"input": {"prompt": "cat"}}, ["input", "image_url"]),
        ({"input": GOOD_INPUT, "metadata": ["a"]}, ["metadata"]),
        ({"input": GOOD_INPUT, "client_ref": "x" * 256}, ["client_ref"]),
        ({"input": GOOD_INPUT, "client_ref": 5}, ["client_ref"]),
        ({"input": GOOD_INPUT, "callback_url": "not a url"}, ["callback_url"]),
        ({"input": GOOD_INPUT, "webhook": "https://x"}, ["webhook"]),
    ],
)
def test_it_rejects_a_bad_body(http: httpx.Client, body: Any, loc: list[Any]) -> None:
    response = create(http, body)

    assert response.status_code == 422
    assert loc in locs(response)


def test_it_accepts_a_client_ref_of_255_characters(http: httpx.Client) -> None:
    assert create(http, {"input": GOOD_INPUT, "client_ref": "x" * 255}).status_code == 201


@pytest.mark.parametrize("raw", [b"{not json", b"", '{"input": "\xe9"'.encode("latin-1")])
def test_it_answers_400_to_a_body_that_is_not_json(http: httpx.Client, raw: bytes) -> None:
    response = http.post(RUNS, content=raw)

    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_JSON"


# --- idempotency --------------------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_first_answer(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    first = create(http, {"input": GOOD_INPUT}, **{"Idempotency-Key": "k1"})
    again = create(http, {"input": GOOD_INPUT}, **{"Idempotency-Key": "k1"})

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(standin.runs) == 1


def test_the_same_key_with_another_body_is_a_conflict(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    create(http, {"input": GOOD_INPUT}, **{"Idempotency-Key": "k1"})
    # Same JSON, other bytes: the key covers the exact request body.
    other = http.post(
        RUNS, content=json.dumps({"input": GOOD_INPUT}, indent=1), headers={"Idempotency-Key": "k1"}
    )

    assert other.status_code == 409
    assert other.json()["code"] == "CONFLICT"
    assert len(standin.runs) == 1


def test_a_key_is_only_remembered_for_a_run_that_was_created(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    standin.rate_limit_next = 1
    assert create(http, {"input": GOOD_INPUT}, **{"Idempotency-Key": "k1"}).status_code == 429
    bad = {"input": {**GOOD_INPUT, "max_masks": 99}}
    assert create(http, bad, **{"Idempotency-Key": "k1"}).status_code == 422

    assert create(http, {"input": GOOD_INPUT}, **{"Idempotency-Key": "k1"}).status_code == 201


def test_knobs_answer_the_next_creates_in_order(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    standin.scripted = [(418, {"code": "TEAPOT"}), (502, "<html>bad gateway</html>")]
    standin.rate_limit_next = 1
    standin.retry_after = "7"
    standin.unavailable_next = 1

    answers = [create(http, {"input": GOOD_INPUT}) for _ in range(5)]

    assert [a.status_code for a in answers] == [418, 502, 429, 503, 201]
    assert answers[1].headers["content-type"] == "text/html"
    assert answers[2].headers["retry-after"] == "7"
    assert answers[2].json()["code"] == "RATE_LIMITED"
    assert answers[3].json()["code"] == "MODEL_UNAVAILABLE"
    standin.reset()
    assert standin.runs == {} and standin.requests == [] and standin.scripted == []


def test_a_delayed_create_exists_before_it_answers(standin: RunflowStandin) -> None:
    standin.create_delay = 5.0
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            standin.base_url + RUNS,
            json={"input": GOOD_INPUT, "client_ref": "slow"},
            headers=AUTH,
            timeout=0.2,
        )

    assert len(standin.runs_for_client_ref("slow")) == 1


# --- reading runs -------------------------------------------------------------------------------


def test_it_lists_runs_newest_first_with_a_cursor(http: httpx.Client) -> None:
    ids = [create(http, {"input": GOOD_INPUT}).json()["id"] for _ in range(3)]

    first = http.get("/v1/runs", params={"limit": 2}).json()
    second = http.get("/v1/runs", params={"limit": 2, "pq": first["next_pq"]}).json()

    assert [r["id"] for r in first["items"]] == [ids[2], ids[1]]
    assert [r["id"] for r in second["items"]] == [ids[0]]
    assert second["next_pq"] is None
    # The name older SDKs send for the cursor is taken too.
    again = http.get("/v1/runs", params={"limit": 2, "cursor": first["next_pq"]}).json()
    assert again["items"] == second["items"]


@pytest.mark.parametrize("limit", ["0", "501", "many"])
def test_it_refuses_a_bad_limit(http: httpx.Client, limit: str) -> None:
    response = http.get("/v1/runs", params={"limit": limit})

    assert response.status_code == 422
    assert locs(response) == [["query", "limit"]]


def test_it_refuses_a_bad_cursor(http: httpx.Client) -> None:
    assert http.get("/v1/runs", params={"pq": "garbage!"}).status_code == 400


def test_a_missing_run_is_404(http: httpx.Client) -> None:
    response = http.get("/v1/runs/nope")

    assert response.status_code == 404
    assert response.json() == {
        "code": "RUN_NOT_FOUND",
        "message": "Run nope not found",
        "errors": None,
    }


def test_set_run_status_moves_a_run_along(standin: RunflowStandin, http: httpx.Client) -> None:
    run_id = create(http, {"input": GOOD_INPUT}).json()["id"]

    standin.set_run_status(run_id, "running")
    running = http.get(f"/v1/runs/{run_id}").json()
    standin.set_run_status(run_id, "succeeded", output={"model_data": {"masks": []}}, cost="0.005")
    done = http.get(f"/v1/runs/{run_id}").json()

    assert running["status_code"] == "running"
    assert running["started_at"] and running["completed_at"] is None
    assert done["status_code"] == "succeeded"
    assert done["completed_at"].endswith("+00:00")
    assert (done["output"], done["cost"]) == ({"model_data": {"masks": []}}, "0.005")


# --- assets -------------------------------------------------------------------------------------


def start_upload(http: httpx.Client, data: bytes, mime_type: str = "image/jpeg") -> dict[str, Any]:
    response = http.post(
        "/v1/asset-uploads",
        json={"filename": "cat.jpg", "mime_type": mime_type, "size_bytes": len(data)},
    )
    assert response.status_code == 201
    return response.json()


def test_the_asset_flow_end_to_end(
    standin: RunflowStandin, http: httpx.Client, anon: httpx.Client
) -> None:
    data = CAT.read_bytes()
    slot = start_upload(http, data)

    put = anon.put(slot["upload_url"], content=data, headers={"Content-Type": "image/jpeg"})
    confirmed = http.post(f"/v1/asset-uploads/{slot['asset_id']}/confirmations")

    assert put.status_code == 200
    assert confirmed.status_code == 201
    asset = confirmed.json()
    assert asset["url"] == f"{standin.base_url}/assets/{slot['asset_id']}"
    assert (asset["mime_type"], asset["size_bytes"]) == ("image/jpeg", len(data))
    served = anon.get(asset["url"])
    assert (served.content, served.headers["content-type"]) == (data, "image/jpeg")
    assert standin.assets[slot["asset_id"]]["data"] == data
    for url in (asset["url"], f"runflow://assets/{slot['asset_id']}"):
        assert create(http, {"input": {"image_url": url}}).status_code == 201


def test_an_asset_cannot_be_confirmed_before_its_bytes_arrive(http: httpx.Client) -> None:
    slot = start_upload(http, b"abc")

    response = http.post(f"/v1/asset-uploads/{slot['asset_id']}/confirmations")

    assert (response.status_code, response.json()["code"]) == (409, "UPLOAD_INCOMPLETE")
    unconfirmed = create(http, {"input": {"image_url": f"runflow://assets/{slot['asset_id']}"}})
    assert unconfirmed.status_code == 422


@pytest.mark.parametrize(
    ("headers", "content", "query", "status"),
    [
        ({"Content-Type": "image/jpeg", **AUTH}, b"abc", None, 400),  # a key on a presigned URL
        ({"Content-Type": "image/png"}, b"abc", None, 400),
        ({"Content-Type": "image/jpeg"}, b"abcd", None, 400),
        ({"Content-Type": "image/jpeg"}, b"abc", "sig=forged", 403),
    ],
)
def test_the_upload_url_is_strict(
    http: httpx.Client,
    anon: httpx.Client,
    headers: dict[str, str],
    content: bytes,
    query: str | None,
    status: int,
) -> None:
    slot = start_upload(http, b"abc")
    url = slot["upload_url"] if query is None else slot["upload_url"].split("?")[0] + "?" + query

    assert anon.put(url, content=content, headers=headers).status_code == status


@pytest.mark.parametrize(
    "body",
    [
        {"filename": "a.png", "mime_type": "image/png", "size_bytes": MAX_ASSET_BYTES + 1},
        {"filename": "a.png", "mime_type": "image/png", "size_bytes": 0},
        {"filename": "", "mime_type": "image/png", "size_bytes": 3},
        {"mime_type": "image/png", "size_bytes": 3},
    ],
)
def test_it_refuses_a_bad_asset_upload(http: httpx.Client, body: dict[str, Any]) -> None:
    assert http.post("/v1/asset-uploads", json=body).status_code == 422


def test_unknown_assets_are_404(http: httpx.Client, anon: httpx.Client) -> None:
    assert http.post("/v1/asset-uploads/nope/confirmations").status_code == 404
    assert anon.get("/assets/nope").status_code == 404


# --- HTTP hygiene -------------------------------------------------------------------------------


def test_unknown_paths_and_methods_get_json_errors(http: httpx.Client) -> None:
    missing = http.get("/v2/nothing")
    wrong_method = http.delete("/v1/runs")

    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "METHOD_NOT_ALLOWED")
    assert wrong_method.headers["allow"] == "GET"


def test_a_body_over_the_limit_is_refused_unread(standin: RunflowStandin) -> None:
    with socket.create_connection(("127.0.0.1", standin.port)) as sock:
        sock.sendall(
            f"POST {RUNS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
            "Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):  # the server closes the connection after answering
            chunks.append(chunk)
        answer = b"".join(chunks).decode()

    assert answer.startswith("HTTP/1.1 413")
    assert "PAYLOAD_TOO_LARGE" in answer
    assert "Connection: close" in answer


def test_a_bug_in_a_route_becomes_a_500_not_a_dead_thread(
    standin: RunflowStandin, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(standin, "_get_run", broken)

    response = http.get("/v1/runs/x")

    assert (response.status_code, response.json()["code"]) == (500, "INTERNAL_ERROR")
    assert "RuntimeError: boom" in standin.handler_errors[0]
    assert http.get("/v1/auth/me").status_code == 200  # the server carries on
    standin.reset()


def test_requests_are_recorded_with_lowercased_headers(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    create(http, {"input": GOOD_INPUT}, **{"Idempotency-Key": "abc"})

    [call] = standin.create_calls()
    assert call.headers["idempotency-key"] == "abc"
    assert call.json == {"input": GOOD_INPUT}
    assert call.body == json.dumps({"input": GOOD_INPUT}).encode()


def test_it_runs_by_hand_from_the_command_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "runflow_standin", "--port", "0", "--key", "k1", "--quiet"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        base_url = lines[0].split()[-1]
        assert lines[2].split() == [f"RUNFLOW_BASE_URL={base_url}", "RUNFLOW_API_KEY=k1"]
        response = httpx.get(f"{base_url}/v1/auth/me", headers={"Authorization": "Bearer k1"})
        assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
