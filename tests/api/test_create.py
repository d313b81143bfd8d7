"""Creating a run through /v1/: Runflow's body, validated by the run form's schema before
anything reaches Runflow; every bad input a 4xx in Runflow's error shape naming the field, and
nothing stored."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import httpx
import pytest
from django.test import Client

from accounts.models import ApiToken
from segmentation.models import Run
from tests.api.conftest import SAM3_PATH, body, cat_data_uri
from tests.factories import image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def post(client: Client, token: str, standin) -> Any:
    def post(payload: Any, *, raw: bytes | None = None, **headers: Any) -> Any:
        data = raw if raw is not None else json.dumps(payload)
        return client.post(
            SAM3_PATH,
            data=data,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
            **headers,
        )

    return post


def refused(response: Any, status: int = 422, code: str = "VALIDATION_ERROR") -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert data["code"] == code
    assert data["message"]
    assert Run.objects.count() == 0  # nothing half-made
    return data


def locs(data: dict[str, Any]) -> list[list[Any]]:
    return [error["loc"] for error in data["errors"]]


def test_a_run_is_created_and_answered_as_runflow_does(post, owner) -> None:
    response = post({**body(), "metadata": {"batch": "b1"}, "client_ref": "row-17"})
    assert response.status_code == 201
    run = response.json()
    assert set(run) >= {"id", "status_code", "input", "metadata", "created_at", "output"}
    assert run["status_code"] == "queued"
    assert run["metadata"] == {"batch": "b1"}
    assert run["client_ref"] == "row-17"
    assert run["output"] is None
    assert run["created_at"].endswith("+00:00")
    assert run["input"]["prompt"] == "cat"
    assert run["input"]["max_masks"] == 3  # Runflow's default, filled in
    stored = Run.objects.get(pk=run["id"])
    assert stored.owner == owner
    assert stored.token == ApiToken.objects.get(user=owner)
    assert stored.via_api
    assert stored.input["return_multiple_masks"] is True
    assert stored.image.width == 451


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"{", b'{"input": NaN}', b"\xff\xfe", b"[1, 2", b'{"input": {}} trailing'],
)
def test_a_body_that_is_not_json_is_refused(post, raw: bytes) -> None:
    data = refused(post(None, raw=raw))
    assert locs(data) == [["body"]]
    assert data["errors"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("payload", [[], "run", 1, None, True, [body()]])
def test_json_that_is_not_an_object_is_refused(post, payload: Any) -> None:
    data = refused(post(payload))
    assert locs(data) == [["body"]]


def test_an_empty_body_is_refused(post) -> None:
    assert locs(refused(post(None, raw=b""))) == [["body"]]


def test_unknown_keys_are_named(post) -> None:
    data = refused(post({**body(colour="red"), "webhook": "https://example.com/"}))
    assert ["input", "colour"] in locs(data)
    assert ["webhook"] in locs(data)
    assert "colour" in data["message"] or "webhook" in data["message"]


@pytest.mark.parametrize(
    ("field", "value", "loc"),
    [
        ("max_masks", 0, ["input", "max_masks"]),
        ("max_masks", 33, ["input", "max_masks"]),
        ("max_masks", "3", ["input", "max_masks"]),
        ("max_masks", True, ["input", "max_masks"]),
        ("max_masks", 2.5, ["input", "max_masks"]),
        ("apply_mask", "yes", ["input", "apply_mask"]),
        ("return_multiple_masks", 1, ["input", "return_multiple_masks"]),
        ("include_scores", None, None),  # null: the default, accepted
        ("include_boxes", [], ["input", "include_boxes"]),
        ("sync_mode", "false", ["input", "sync_mode"]),
        ("output_format", "gif", ["input", "output_format"]),
        ("output_format", "PNG", ["input", "output_format"]),
        ("prompt", "x" * 1001, ["input", "prompt"]),
        ("prompt", 7, ["input", "prompt"]),
        ("text_prompt", "dog", ["input", "prompt"]),  # differs from prompt
        ("point_prompts", [{"x": 1, "y": 1, "label": 2}], ["input", "point_prompts", 0, "label"]),
        ("point_prompts", [{"x": 1, "label": 1}], ["input", "point_prompts", 0, "y"]),
        ("point_prompts", [{"x": -1, "y": 1, "label": 1}], ["input", "point_prompts", 0, "x"]),
        (
            "point_prompts",
            [{"x": 1, "y": 1, "label": 1, "z": 0}],
            ["input", "point_prompts", 0, "z"],
        ),
        (
            "point_prompts",
            [{"x": 1, "y": 1, "label": 1, "object_id": 64}],
            ["input", "point_prompts", 0, "object_id"],
        ),
        ("point_prompts", [{"x": 1, "y": 1, "label": 1}] * 101, ["input", "point_prompts"]),
        ("point_prompts", "[]", ["input", "point_prompts"]),
        (
            "box_prompts",
            [{"x_min": 9, "y_min": 0, "x_max": 9, "y_max": 5}],
            ["input", "box_prompts", 0],
        ),
        (
            "box_prompts",
            [{"x_min": 0, "y_min": 0, "x_max": 5}],
            ["input", "box_prompts", 0, "y_max"],
        ),
        (
            "box_prompts",
            [{"x_min": 0, "y_min": 0, "x_max": 5, "y_max": 5}] * 51,
            ["input", "box_prompts"],
        ),
        ("box_prompts", {"x_min": 0}, ["input", "box_prompts"]),
    ],
)
def test_every_field_out_of_range_is_named(post, field: str, value: Any, loc: Any) -> None:
    response = post(body(**{field: value}))
    if loc is None:
        assert response.status_code == 201
        return
    data = refused(response)
    assert loc in locs(data), data
    assert ".".join(str(part) for part in loc) in data["message"]


def test_points_and_boxes_outside_the_image_are_named(post) -> None:
    data = refused(
        post(
            body(
                point_prompts=[{"x": 451, "y": 10, "label": 1}, {"x": 10, "y": 10, "label": 1}],
                box_prompts=[{"x_min": 0, "y_min": 0, "x_max": 452, "y_max": 300}],
            )
        )
    )
    assert locs(data) == [["input", "point_prompts", 0], ["input", "box_prompts", 0]]
    assert "451×300" in data["errors"][0]["msg"]


def test_a_run_without_a_prompt_is_refused(post) -> None:
    data = refused(post(body(prompt="")))
    assert locs(data) == [["input", "prompt"]]


def test_points_alone_are_a_prompt(post) -> None:
    response = post(body(prompt=None, point_prompts=[{"x": 200, "y": 150, "label": 1}]))
    assert response.status_code == 201
    assert response.json()["input"]["point_prompts"] == [{"x": 200, "y": 150, "label": 1}]


@pytest.mark.parametrize(
    ("image_url", "words"),
    [
        (None, "required"),
        (17, "text"),
        ("", "link"),
        ("ftp://example.com/cat.jpg", "http"),
        ("data:text/plain;base64,aGVsbG8=", "not an image"),
        ("data:image/png;base64,!!!not-base64!!!", "base64"),
        ("data:image/jpeg;base64," + base64.b64encode(b"plain text").decode(), ""),
    ],
)
def test_an_unusable_image_is_named(post, image_url: Any, words: str) -> None:
    payload = body()
    if image_url is None:
        del payload["input"]["image_url"]
    else:
        payload["input"]["image_url"] = image_url
    data = refused(post(payload))
    assert locs(data) == [["input", "image_url"]]
    assert words in data["errors"][0]["msg"]


@pytest.mark.parametrize(
    "callback_url",
    [
        "http://10.0.0.1/hook",
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[fd00:ec2::254]/hook",
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "https://example.com/" + "a" * 5000,
        "not a url",
        42,
    ],
)
def test_a_callback_url_that_is_private_not_http_or_too_long_is_refused(
    post, callback_url: Any, connections: list
) -> None:
    data = refused(post({**body(), "callback_url": callback_url}))
    assert locs(data) == [["callback_url"]]
    assert connections == []


def test_metadata_and_client_ref_have_limits(post) -> None:
    assert locs(refused(post({**body(), "metadata": {"a": {"b": 1}}}))) == [["metadata"]]
    assert locs(refused(post({**body(), "metadata": [1]}))) == [["metadata"]]
    assert locs(refused(post({**body(), "client_ref": "r" * 256}))) == [["client_ref"]]
    assert locs(refused(post({**body(), "client_ref": 5}))) == [["client_ref"]]


def test_a_body_over_the_limit_is_refused_with_413(post, settings) -> None:
    settings.SAM3WEB_API_MAX_BODY_BYTES = 2048
    payload = body()
    data = refused(post(payload), status=413, code="PAYLOAD_TOO_LARGE")
    assert "2,048 bytes" in data["message"]


def test_a_10_mb_body_over_a_real_socket_gets_its_413(live_server, token: str, standin) -> None:
    # The client is still sending when the app refuses: it must read a 413, not a reset.
    payload = body()
    payload["input"]["image_url"] = "data:image/png;base64," + "A" * (10 * 1024 * 1024)
    response = httpx.post(
        live_server.url + SAM3_PATH,
        json=payload,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert Run.objects.count() == 0


# --- Idempotency-Key ------------------------------------------------------------------------------


def test_the_same_key_and_body_answer_with_the_same_run(post) -> None:
    first = post(body(), HTTP_IDEMPOTENCY_KEY="job-1")
    again = post(body(), HTTP_IDEMPOTENCY_KEY="job-1")
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Run.objects.count() == 1


def test_the_same_key_with_another_body_is_a_conflict(post) -> None:
    first = post(body(), HTTP_IDEMPOTENCY_KEY="job-1")
    assert first.status_code == 201
    other = post(body(prompt="dog"), HTTP_IDEMPOTENCY_KEY="job-1")
    assert other.status_code == 409
    assert other.json()["code"] == "CONFLICT"
    assert Run.objects.count() == 1


def test_keys_are_per_teammate(post, client: Client, teammate) -> None:
    _row, theirs = ApiToken.issue(teammate, "ci")
    mine = post(body(), HTTP_IDEMPOTENCY_KEY="job-1")
    other = client.post(
        SAM3_PATH,
        data=json.dumps(body()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {theirs}",
        HTTP_IDEMPOTENCY_KEY="job-1",
    )
    assert mine.status_code == other.status_code == 201
    assert mine.json()["id"] != other.json()["id"]


def test_a_key_over_255_characters_is_refused(post) -> None:
    data = refused(post(body(), HTTP_IDEMPOTENCY_KEY="k" * 256))
    assert locs(data) == [["header", "Idempotency-Key"]]


def test_the_same_key_raced_from_two_clients_makes_one_run(
    live_server, token: str, standin
) -> None:
    payload = body()
    answers: list[httpx.Response] = []
    start = threading.Barrier(4)

    def send() -> None:
        start.wait()
        answers.append(
            httpx.post(
                live_server.url + SAM3_PATH,
                json=payload,
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "raced"},
                timeout=30,
            )
        )

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [201] * 4, [a.text[:300] for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert Run.objects.count() == 1


def test_an_inline_image_is_echoed_as_a_link_to_our_copy(post) -> None:
    run = post(body()).json()
    link = run["input"]["image_url"]
    assert link.startswith("http://testserver/v1/files/")
    assert cat_data_uri() not in json.dumps(run)
    copy = Client().get(link.removeprefix("http://testserver"))
    assert copy.status_code == 200
    assert b"".join(copy.streaming_content) == image_bytes("cat.jpg")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({**body(prompt="c\u0000t")}, ["input", "prompt"]),
        ({**body(), "metadata": {"k": "v\u0000"}}, ["metadata", "k"]),
        ({**body(), "client_ref": "\u0000"}, ["client_ref"]),
    ],
)
def test_text_holding_a_nul_character_is_refused(post, payload: Any, loc: list[Any]) -> None:
    assert locs(refused(post(payload))) == [loc]


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"input": {"prompt": "\\ud800"}}', ["input", "prompt"]),
        (b'{"metadata": {"\\udfff": 1}}', ["metadata", "\udfff"]),
        (b'{"client_ref": "a\\ud83d"}', ["client_ref"]),
    ],
)
def test_text_holding_a_lone_surrogate_is_refused(post, raw: bytes, loc: list[Any]) -> None:
    data = refused(post(None, raw=raw))
    assert data["errors"][0]["loc"][0] == loc[0]
    assert len(data["errors"]) == 1


def test_without_a_runflow_key_the_model_is_unavailable(post, settings) -> None:
    settings.RUNFLOW_API_KEY = ""
    data = refused(post(body()), status=503, code="MODEL_UNAVAILABLE")
    assert "no Runflow API key" in data["message"]
