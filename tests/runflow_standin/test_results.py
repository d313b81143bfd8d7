"""How the Runflow stand-in ends runs: the lifecycle, SAM 3's output drawn from the prompts,
result files and their faults, and callbacks (order, signature, retries, redelivery). Spoken to
with bare httpx over the socket; callbacks land on a small receiver started by the test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from runflow_standin.server import RunflowStandin
from tests.sample_images import IMAGES, ROOT

AUTH = {"Authorization": "Bearer test-key"}
RUNS = "/v1/models/meta/sam-3/image/runs"
BOX = {"x_min": 100, "y_min": 50, "x_max": 300, "y_max": 250}
CALLBACK_KEYS = [
    "event",
    "run_id",
    "status",
    "output",
    "duration_ms",
    "created_at",
    "completed_at",
    "metadata",
]


def data_uri(width: int, height: int, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, fmt)
    mime = "image/png" if fmt == "PNG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


IMAGE_640 = data_uri(640, 480)


@pytest.fixture(scope="module")
def http(_standin_server: RunflowStandin) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=_standin_server.base_url, headers=AUTH) as client:
        yield client


def create(http: httpx.Client, image_url: str = IMAGE_640, **fields: Any) -> dict[str, Any]:
    """Create a run; `fields` go into input, except callback_url and metadata."""
    body: dict[str, Any] = {"input": {"image_url": image_url, "prompt": "cat"}}
    for name in ("callback_url", "metadata"):
        if name in fields:
            body[name] = fields.pop(name)
    body["input"].update(fields)
    response = http.post(RUNS, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def fetch_image(url: str) -> Image.Image:
    if url.startswith("data:"):
        data = base64.b64decode(url.split(",", 1)[1])
    else:
        response = httpx.get(url)
        assert response.status_code == 200
        data = response.content
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def masks_of(run: dict[str, Any]) -> list[Image.Image]:
    return [fetch_image(mask["url"]) for mask in run["output"]["model_data"]["masks"]]


def drawn_box(mask: Image.Image) -> tuple[int, int, int, int]:
    """The box around a mask's object pixels (getbbox), for a mask that has some."""
    box = mask.getbbox()
    assert box is not None, "the mask is empty"
    return box


def normalized(bbox: tuple[int, int, int, int], size: tuple[int, int]) -> list[float]:
    left, top, right, bottom = bbox
    w, h = size
    return [
        round((left + right) / 2 / w, 6),
        round((top + bottom) / 2 / h, 6),
        round((right - left) / w, 6),
        round((bottom - top) / h, 6),
    ]


# --- a callback receiver ------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # names lowercased
    body: bytes
    time: float


class Receiver:
    """An app's callback endpoint on 127.0.0.1: records each POST and answers the scripted
    statuses in order (200 once the script runs out); ("sleep", s) answers 200 after s."""

    def __init__(self) -> None:
        self.script: list[int | tuple[str, float]] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver._lock:
                    receiver.received.append(Received(headers, body, time.monotonic()))
                    step = receiver.script.pop(0) if receiver.script else 200
                if isinstance(step, tuple):
                    time.sleep(step[1])
                    step = 200
                self.send_response(step)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/runflow/callback?t=abc"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the lifecycle ------------------------------------------------------------------------------


def test_a_run_finishes_by_itself_after_complete_after(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    standin.complete_after = 0.4
    started = time.monotonic()
    run = create(http)
    seen = [run["status_code"]]
    while seen[-1] != "succeeded" and time.monotonic() - started < 3:
        status = http.get(f"/v1/runs/{run['id']}").json()["status_code"]
        if status != seen[-1]:
            seen.append(status)
        time.sleep(0.02)

    assert seen == ["queued", "running", "succeeded"]
    assert time.monotonic() - started >= 0.4
    [listed] = http.get("/v1/runs").json()["items"]
    assert listed == http.get(f"/v1/runs/{run['id']}").json() == standin.runs[run["id"]]


def test_without_complete_after_a_run_stays_queued(
    standin: RunflowStandin, http: httpx.Client, receiver: Receiver
) -> None:
    run = create(http, callback_url=receiver.url)

    time.sleep(0.2)

    assert http.get(f"/v1/runs/{run['id']}").json()["status_code"] == "queued"
    assert standin.callbacks == [] and receiver.received == []


def test_a_finished_run_carries_every_terminal_field(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    run = create(http)

    returned = standin.finish(run["id"])
    done = http.get(f"/v1/runs/{run['id']}").json()

    assert done == returned
    assert done["status_code"] == "succeeded"
    assert done["output"]["model_data"]["masks"]
    assert isinstance(done["duration_ms"], int) and done["duration_ms"] >= 0
    assert done["cost"] == "0.005"
    for name in ("created_at", "started_at", "completed_at"):
        assert done[name].endswith("+00:00"), name
    assert done["created_at"] <= done["started_at"] <= done["completed_at"]
    assert (done["failure_code"], done["failure_message"], done["failure_stage_code"]) == (
        None,
        None,
        None,
    )
    with pytest.raises(ValueError, match="terminal states never change"):
        standin.finish(run["id"], "failed")


@pytest.mark.parametrize(
    ("outcome", "status", "event", "callback_status", "cost", "has_output"),
    [
        ("succeeded", "succeeded", "run.completed", "succeeded", "0.005", True),
        (
            "partial_succeeded",
            "partial_succeeded",
            "run.partial_succeeded",
            "partial_succeeded",
            "0.005",
            True,
        ),  # fmt: skip
        ("failed", "failed", "run.failed", "failed", "0", False),
        ("canceled", "canceled", "run.cancelled", "cancelled", "0", False),
    ],
)
def test_each_outcome_ends_the_run_and_calls_back(
    standin: RunflowStandin,
    http: httpx.Client,
    receiver: Receiver,
    outcome: str,
    status: str,
    event: str,
    callback_status: str,
    cost: str,
    has_output: bool,
) -> None:
    standin.complete_after = 0.0
    standin.outcome = outcome
    run = create(http, callback_url=receiver.url)

    done = standin.wait_for_run(run["id"])
    [attempt] = standin.wait_for_callbacks(1)

    assert done["status_code"] == status
    assert done["cost"] == cost
    assert (done["output"] is not None) == has_output
    payload = json.loads(attempt.body)
    assert (payload["event"], payload["status"]) == (event, callback_status)
    assert payload["output"] == done["output"]
    failure = (done["failure_code"], done["failure_message"], done["failure_stage_code"])
    if outcome == "failed":
        assert failure == ("MODEL_ERROR", "The model could not process this image", "inference")
    else:
        assert failure == (None, None, None)


def test_finish_takes_either_spelling_of_cancelled(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    run = create(http)

    assert standin.finish(run["id"], "cancelled")["status_code"] == "canceled"


def test_finish_fields_override_what_the_run_would_get(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    run = create(http)

    done = standin.finish(run["id"], "failed", failure_code="NSFW", failure_message="No.")

    assert (done["failure_code"], done["failure_message"]) == ("NSFW", "No.")
    assert done["failure_stage_code"] == "inference"


def test_an_image_it_cannot_decode_fails_the_run(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    not_an_image = "data:image/png;base64," + base64.b64encode(b"hello, world").decode()
    run = create(http, not_an_image)

    done = standin.finish(run["id"])

    assert done["status_code"] == "failed"
    assert (done["failure_code"], done["output"], done["cost"]) == ("INVALID_INPUT", None, "0")


# --- callbacks ----------------------------------------------------------------------------------


def test_the_callback_is_runflows_json_in_the_documented_order(
    standin: RunflowStandin, http: httpx.Client, receiver: Receiver
) -> None:
    run = create(http, callback_url=receiver.url, metadata={"local_id": 7})

    done = standin.finish(run["id"])
    [attempt] = standin.wait_for_callbacks(1)

    [received] = receiver.received
    assert received.body == attempt.body
    payload = json.loads(received.body)
    assert list(payload) == CALLBACK_KEYS
    assert payload == {
        "event": "run.completed",
        "run_id": run["id"],
        "status": "succeeded",
        "output": done["output"],
        "duration_ms": done["duration_ms"],
        "created_at": done["created_at"],
        "completed_at": done["completed_at"],
        "metadata": {"local_id": 7},
    }
    assert payload["created_at"].endswith("+00:00") and payload["completed_at"].endswith("+00:00")
    headers = received.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Runflow-Callbacks/1.0"
    assert uuid.UUID(headers["runflow-request-id"]) and "runflow-signature" not in headers
    assert (attempt.status, attempt.error, attempt.attempt, attempt.delivery) == (200, None, 1, 1)
    assert attempt.request_id == headers["runflow-request-id"]


def test_a_secret_signs_the_raw_body(
    standin: RunflowStandin, http: httpx.Client, receiver: Receiver
) -> None:
    standin.callback_secret = "whsec_test_secret"
    run = create(http, callback_url=receiver.url)

    standin.finish(run["id"], "failed")
    standin.wait_for_callbacks(1)

    [received] = receiver.received
    expected = hmac.new(b"whsec_test_secret", received.body, hashlib.sha256).hexdigest()
    signature = received.headers["runflow-signature"]
    assert len(signature) == 64 and signature == signature.lower()
    assert hmac.compare_digest(signature, expected)


def test_it_retries_a_5xx_three_times_with_the_backoff(
    standin: RunflowStandin, http: httpx.Client, receiver: Receiver
) -> None:
    standin.callback_backoff = (0.1, 0.2)
    receiver.script = [500, 503, 502]
    run = create(http, callback_url=receiver.url)

    standin.finish(run["id"])
    attempts = standin.wait_for_callbacks(3)
    time.sleep(0.3)  # long enough for a fourth attempt, were there one

    assert [a.status for a in standin.callbacks] == [500, 503, 502]
    assert [a.attempt for a in attempts] == [1, 2, 3]
    times = [r.time for r in receiver.received]
    assert times[1] - times[0] >= 0.1 and times[2] - times[1] >= 0.2
    assert len({a.request_id for a in attempts}) == 3  # a fresh id per attempt
    assert len({r.body for r in receiver.received}) == 1  # the same bytes every time


def test_it_stops_retrying_once_an_attempt_gets_through(
    standin: RunflowStandin, http: httpx.Client, receiver: Receiver
) -> None:
    standin.callback_backoff = (0.05, 0.05)
    receiver.script = [500, 200]
    run = create(http, callback_url=receiver.url)

    standin.finish(run["id"])
    standin.wait_for_callbacks(2)
    time.sleep(0.15)

    assert [a.status for a in standin.callbacks] == [500, 200]


def test_it_retries_a_closed_port_three_times(standin: RunflowStandin, http: httpx.Client) -> None:
    standin.callback_backoff = (0.05, 0.1)
    run = create(http, callback_url=f"http://127.0.0.1:{closed_port()}/cb")

    standin.finish(run["id"])
    attempts = standin.wait_for_callbacks(3)
    time.sleep(0.2)

    assert len(standin.callbacks) == 3
    assert all(a.status is None and "Connection" in (a.error or "") for a in attempts)
    assert attempts[1].time - attempts[0].time >= 0.05
    assert attempts[2].time - attempts[1].time >= 0.1


def test_a_receiver_too_slow_to_answer_counts_as_a_network_error(
    standin: RunflowStandin, http: httpx.Client, receiver: Receiver
) -> None:
    standin.callback_backoff = (0.05, 0.05)
    standin.callback_timeout = 0.2
    receiver.script = [("sleep", 0.6), 200]
    run = create(http, callback_url=receiver.url)

    standin.finish(run["id"])
    first, second = standin.wait_for_callbacks(2)

    assert first.status is None and "timed out" in (first.error or "")
    assert second.status == 200


def test_a_4xx_ends_delivery_without_retry(
    standin: RunflowStandin, http: httpx.Client, receiver: Receiver
) -> None:
    standin.callback_backoff = (0.05, 0.05)
    receiver.script = [400]
    run = create(http, callback_url=receiver.url)

    standin.finish(run["id"])
    standin.wait_for_callbacks(1)
    time.sleep(0.2)

    assert [a.status for a in standin.callbacks] == [400]
    assert len(receiver.received) == 1


def test_redeliver_sends_the_same_bytes_with_a_new_request_id(
    standin: RunflowStandin, http: httpx.Client, receiver: Receiver
) -> None:
    standin.callback_secret = "s3cret"
    run = create(http, callback_url=receiver.url)
    standin.finish(run["id"])
    standin.wait_for_callbacks(1)

    assert standin.redeliver(run["id"]) == 2
    answer = http.post(f"/v1/runs/{run['id']}/callback-redeliveries")
    # Deliveries 2 and 3 run side by side: their answers may come in either order.
    first, second, third = sorted(standin.wait_for_callbacks(3), key=lambda a: a.delivery)

    assert (answer.status_code, answer.json()["delivery"]) == (202, 3)
    assert first.body == second.body == third.body
    assert [a.delivery for a in (first, second, third)] == [1, 2, 3]
    assert len({r.headers["runflow-request-id"] for r in receiver.received}) == 3
    assert len({r.headers["runflow-signature"] for r in receiver.received}) == 1
    listed = http.get(f"/v1/runs/{run['id']}/callback").json()["data"]
    assert sorted((d["delivery"], d["response_status"]) for d in listed) == [
        (1, 200),
        (2, 200),
        (3, 200),
    ]


def test_only_a_run_that_called_back_can_be_redelivered(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    run = create(http)
    standin.finish(run["id"])

    assert http.post(f"/v1/runs/{run['id']}/callback-redeliveries").status_code == 409
    assert http.post("/v1/runs/nope/callback-redeliveries").status_code == 404
    with pytest.raises(ValueError, match="no callback"):
        standin.redeliver(run["id"])


# --- output shapes ------------------------------------------------------------------------------


def test_model_data_is_runflows_envelope(standin: RunflowStandin, http: httpx.Client) -> None:
    run = create(http, box_prompts=[BOX], include_scores=True, include_boxes=True)

    output = standin.finish(run["id"])["output"]

    assert list(output) == ["outputs", "model_data", "nsfw_detected", "seed", "timing"]
    assert output["nsfw_detected"] is False and isinstance(output["seed"], int)
    assert isinstance(output["timing"]["inference_ms"], int)
    data = output["model_data"]
    [mask] = data["masks"]
    base = f"{standin.base_url}/files/{run['id']}"
    assert mask == {
        "url": f"{base}/mask-0.png",
        "content_type": "image/png",
        "file_name": "mask-0.png",
        "file_size": mask["file_size"],
        "width": 640,
        "height": 480,
    }
    assert data["image"] == {
        "url": f"{base}/preview.png",
        "content_type": "image/png",
        "file_name": "preview.png",
        "width": 640,
        "height": 480,
    }
    assert data["scores"] == [0.95]
    assert data["boxes"] == [[0.3125, 0.3125, 0.3125, 0.416667]]
    assert data["metadata"] == [{"index": 0, "score": 0.95, "box": data["boxes"][0]}]
    assert (data["prompt"], data["actual_prompt"]) == ("cat", "cat")
    assert [o["url"] for o in output["outputs"]] == [mask["url"], data["image"]["url"]]
    assert all(o["type"] == "image" for o in output["outputs"])
    assert len(httpx.get(mask["url"]).content) == mask["file_size"]


def test_top_level_puts_sam3s_fields_right_in_output(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    standin.output_shape = "top_level"
    run = create(http, box_prompts=[BOX], include_scores=True)

    output = standin.finish(run["id"])["output"]

    assert list(output) == ["masks", "image", "scores", "metadata", "prompt", "actual_prompt"]
    assert output["masks"][0]["url"].endswith("/mask-0.png")


def test_outputs_only_gives_the_unified_array_masks_then_preview(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    standin.output_shape = "outputs_only"
    run = create(http, prompt="tree", return_multiple_masks=True, max_masks=2)

    output = standin.finish(run["id"])["output"]

    assert list(output) == ["outputs"]
    names = [o["file_name"] for o in output["outputs"]]
    assert names == ["mask-0.png", "mask-1.png", "preview.png"]
    for entry in output["outputs"]:
        assert entry["type"] == "image"
        assert (entry["width"], entry["height"]) == (640, 480)
        assert fetch_image(entry["url"]).size == (640, 480)


def test_scores_and_boxes_are_left_out_unless_asked_for(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    run = create(http, apply_mask=False)

    output = standin.finish(run["id"])["output"]

    data = output["model_data"]
    assert "scores" not in data and "boxes" not in data
    assert data["metadata"] == [{"index": 0, "score": None, "box": None}]
    assert data["image"] is None
    assert [o["file_name"] for o in output["outputs"]] == ["mask-0.png"]


@pytest.mark.parametrize(
    ("output_format", "content_type", "pil_format"),
    [("png", "image/png", "PNG"), ("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")],
)
def test_the_preview_is_painted_in_the_asked_format(
    standin: RunflowStandin,
    http: httpx.Client,
    output_format: str,
    content_type: str,
    pil_format: str,
) -> None:
    run = create(http, box_prompts=[BOX], output_format=output_format)

    image = standin.finish(run["id"])["output"]["model_data"]["image"]
    response = httpx.get(image["url"])

    assert response.headers["content-type"] == image["content_type"] == content_type
    preview = Image.open(io.BytesIO(response.content))
    assert (preview.format, preview.size) == (pil_format, (640, 480))
    assert preview.convert("RGB").getpixel((200, 150)) != (90, 120, 150)  # painted
    assert preview.convert("RGB").getpixel((5, 5)) == pytest.approx((90, 120, 150), abs=6)


# --- masks follow the prompts -------------------------------------------------------------------


def test_a_box_gives_the_ellipse_inscribed_in_it(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    run = create(http, box_prompts=[BOX])

    [mask] = masks_of(standin.finish(run["id"]))

    assert (mask.mode, mask.size, mask.format) == ("L", (640, 480), "PNG")
    for x, y in [(200, 150), (110, 150), (289, 150), (200, 60), (200, 239)]:
        assert mask.getpixel((x, y)) == 255, (x, y)
    for x, y in [(101, 51), (298, 51), (101, 248), (298, 248)]:  # the box's corners
        assert mask.getpixel((x, y)) == 0, (x, y)
    assert mask.getbbox() == (100, 50, 300, 250)  # nothing outside the box
    assert set(mask.getextrema()) == {0, 255}


def test_a_positive_point_gives_a_disc(standin: RunflowStandin, http: httpx.Client) -> None:
    run = create(http, point_prompts=[{"x": 320, "y": 240, "label": 1}])

    [mask] = masks_of(standin.finish(run["id"]))

    radius = round(0.06 * 480)
    assert mask.getpixel((320, 240)) == 255
    assert mask.getpixel((320 + radius - 2, 240)) == 255
    assert mask.getpixel((320, 240 - radius + 2)) == 255
    assert mask.getpixel((320 + radius + 2, 240)) == 0
    assert mask.getpixel((320 + radius - 3, 240 + radius - 3)) == 0  # round, not square
    left, top, right, bottom = drawn_box(mask)
    assert abs((right - left) - 2 * radius) <= 2 and abs((bottom - top) - 2 * radius) <= 2


def test_a_negative_point_carves_a_hole(standin: RunflowStandin, http: httpx.Client) -> None:
    run = create(http, box_prompts=[BOX], point_prompts=[{"x": 200, "y": 150, "label": 0}])

    [mask] = masks_of(standin.finish(run["id"]))

    radius = round(0.06 * 480)
    assert mask.getpixel((200, 150)) == 0
    assert mask.getpixel((200 + radius - 2, 150)) == 0
    assert mask.getpixel((200 + radius + 5, 150)) == 255
    assert mask.getbbox() == (100, 50, 300, 250)


def test_object_ids_group_boxes_and_points_into_one_mask(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    boxes = [
        {"x_min": 10, "y_min": 10, "x_max": 60, "y_max": 60, "object_id": 1},
        {"x_min": 400, "y_min": 300, "x_max": 500, "y_max": 400},
        {"x_min": 100, "y_min": 10, "x_max": 150, "y_max": 60, "object_id": 1},
    ]
    points = [
        {"x": 600, "y": 50, "label": 1, "object_id": 1},  # joins the boxes' object
        {"x": 300, "y": 440, "label": 1, "object_id": 7},
        {"x": 340, "y": 440, "label": 1, "object_id": 7},  # one object with the previous
        {"x": 50, "y": 440, "label": 1},
    ]
    run = create(http, box_prompts=boxes, point_prompts=points, return_multiple_masks=True)
    many = masks_of(standin.finish(run["id"]))
    single = create(http, box_prompts=boxes, point_prompts=points)
    [first] = masks_of(standin.finish(single["id"]))

    assert len(many) == 3  # max_masks defaults to 3: the fourth object is dropped
    grouped, lone_box, points_7 = many
    radius = round(0.06 * 480)
    assert grouped.getbbox() == (10, 10, 600 + radius, 50 + radius)
    assert grouped.getpixel((130, 35)) == grouped.getpixel((600, 50)) == 255
    assert grouped.getpixel((80, 35)) == 0  # between the two boxes
    assert lone_box.getbbox() == (400, 300, 500, 400)
    assert points_7.getpixel((300, 440)) == points_7.getpixel((340, 440)) == 255
    assert first.tobytes() == grouped.tobytes()  # one mask unless multiple are asked for


def test_a_text_prompt_places_masks_by_its_hash(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    runs = [
        create(http, prompt=prompt, return_multiple_masks=True, max_masks=4)
        for prompt in ("dog", "dog", "bicycle")
    ]
    masks = [masks_of(standin.finish(run["id"])) for run in runs]

    dog, dog_again, bicycle = ([m.tobytes() for m in ms] for ms in masks)
    assert dog == dog_again and dog != bicycle
    assert len(set(dog)) == 4  # four different objects
    for mask in masks[0]:
        left, top, right, bottom = drawn_box(mask)
        assert min(left, top) >= 0 and right <= 640 and bottom <= 480
        assert 0.15 * 640 <= right - left <= 0.25 * 640
        assert 0.15 * 480 <= bottom - top <= 0.25 * 480


def test_normalized_boxes_match_each_masks_pixels(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    run = create(
        http,
        prompt="bird",
        return_multiple_masks=True,
        max_masks=5,
        include_boxes=True,
        include_scores=True,
    )

    done = standin.finish(run["id"])

    data = done["output"]["model_data"]
    assert data["scores"] == [0.95, 0.91, 0.87, 0.83, 0.79]
    for mask, box in zip(masks_of(done), data["boxes"], strict=True):
        assert box == normalized(drawn_box(mask), mask.size)
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in box)


def test_mask_scale_resizes_masks_but_not_their_geometry(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    standin.mask_scale = 0.5
    run = create(http, box_prompts=[BOX], include_boxes=True)

    done = standin.finish(run["id"])

    data = done["output"]["model_data"]
    [mask] = masks_of(done)
    assert mask.size == (320, 240) == (data["masks"][0]["width"], data["masks"][0]["height"])
    assert mask.getbbox() == (50, 25, 150, 125)
    assert data["boxes"] == [[0.3125, 0.3125, 0.3125, 0.416667]]
    assert (data["image"]["width"], data["image"]["height"]) == (640, 480)


def test_the_image_size_comes_from_the_image_as_stored(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    # Stored 451×300 with EXIF orientation 6: the size as decoded, no rotation applied.
    rotated = (IMAGES / "cat-exif-rotated.jpg").read_bytes()
    slot = http.post(
        "/v1/asset-uploads",
        json={"filename": "c.jpg", "mime_type": "image/jpeg", "size_bytes": len(rotated)},
    ).json()
    httpx.put(slot["upload_url"], content=rotated, headers={"Content-Type": "image/jpeg"})
    asset = http.post(f"/v1/asset-uploads/{slot['asset_id']}/confirmations").json()
    standin.image_size = (800, 600)
    runs = [
        create(http, asset["url"]),
        create(http, f"runflow://assets/{slot['asset_id']}"),
        create(http, data_uri(300, 200, "JPEG")),
        create(http, "https://images.example/cat.jpg"),
    ]

    sizes = [masks_of(standin.finish(run["id"]))[0].size for run in runs]

    assert sizes == [(451, 300), (451, 300), (300, 200), (800, 600)]


def test_sync_mode_inlines_every_file_as_a_data_uri(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    run = create(http, box_prompts=[BOX], sync_mode=True, output_format="jpeg")

    output = standin.finish(run["id"])["output"]

    data = output["model_data"]
    assert data["masks"][0]["url"].startswith("data:image/png;base64,")
    assert data["image"]["url"].startswith("data:image/jpeg;base64,")
    assert fetch_image(data["masks"][0]["url"]).getbbox() == (100, 50, 300, 250)
    assert fetch_image(data["image"]["url"]).format == "JPEG"
    assert [o["url"] for o in output["outputs"]] == [data["masks"][0]["url"], data["image"]["url"]]
    assert httpx.get(f"{standin.base_url}/files/{run['id']}/mask-0.png").status_code == 404


def test_32_masks_of_a_large_image_are_fetched_fast(
    standin: RunflowStandin, http: httpx.Client
) -> None:
    run = create(
        http, data_uri(1024, 1024), prompt="pebble", return_multiple_masks=True, max_masks=32
    )
    done = standin.finish(run["id"])
    urls = [mask["url"] for mask in done["output"]["model_data"]["masks"]]

    started = time.perf_counter()
    with httpx.Client() as client:
        bodies = [client.get(url).content for url in urls]
    elapsed = time.perf_counter() - started

    assert len(bodies) == 32 and len(set(bodies)) == 32
    assert Image.open(io.BytesIO(bodies[31])).size == (1024, 1024)
    assert elapsed < 1.0, f"{elapsed:.2f} s for 32 masks"


# --- result files and their faults --------------------------------------------------------------


@pytest.fixture
def finished(standin: RunflowStandin, http: httpx.Client) -> dict[str, Any]:
    """A finished run with two masks and a preview."""
    run = create(http, prompt="cup", return_multiple_masks=True, max_masks=2)
    return standin.finish(run["id"])


def urls_of(run: dict[str, Any]) -> list[str]:
    return [o["url"] for o in run["output"]["outputs"]]


def test_files_need_no_key_and_are_recorded(
    standin: RunflowStandin, finished: dict[str, Any]
) -> None:
    statuses = [httpx.get(url).status_code for url in urls_of(finished)]

    assert statuses == [200, 200, 200]
    assert [r.path.rsplit("/", 1)[1] for r in standin.file_requests()] == [
        "mask-0.png",
        "mask-1.png",
        "preview.png",
    ]
    base = f"{standin.base_url}/files/{finished['id']}"
    for missing in ("mask-2.png", "preview.jpg", "other"):
        assert httpx.get(f"{base}/{missing}").status_code == 404


def test_expired_files_answer_404_but_later_runs_get_fresh_ones(
    standin: RunflowStandin, http: httpx.Client, finished: dict[str, Any]
) -> None:
    standin.expire_files()
    later = standin.finish(create(http)["id"])

    assert [httpx.get(url).status_code for url in urls_of(finished)] == [404, 404, 404]
    assert "NoSuchKey" in httpx.get(urls_of(finished)[0]).text
    assert [httpx.get(url).status_code for url in urls_of(later)] == [200, 200]


@pytest.mark.parametrize(
    ("fault", "statuses"),
    [("404", [404, 404]), ("500", [500, 500]), ("500-once", [500, 200])],
)
def test_a_file_fault_hits_only_its_file(
    standin: RunflowStandin, finished: dict[str, Any], fault: str, statuses: list[int]
) -> None:
    standin.file_faults = {1: fault}
    mask_0, mask_1, preview = urls_of(finished)

    assert [httpx.get(mask_1).status_code for _ in statuses] == statuses
    assert httpx.get(mask_0).status_code == httpx.get(preview).status_code == 200


def test_the_html_fault_answers_a_page_with_200(
    standin: RunflowStandin, finished: dict[str, Any]
) -> None:
    standin.file_faults = {"preview": "html"}

    response = httpx.get(urls_of(finished)[2])

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!doctype html>")


def test_the_hang_fault_stalls_after_the_headers_until_released(
    standin: RunflowStandin, finished: dict[str, Any]
) -> None:
    standin.file_faults = {0: "hang"}
    url = urls_of(finished)[0]

    with httpx.Client(timeout=httpx.Timeout(5.0, read=0.3)) as client:
        with client.stream("GET", url) as response:
            assert response.status_code == 200  # the headers came
            with pytest.raises(httpx.ReadTimeout):
                response.read()
        standin.release_files()
        released = client.get(url)

    assert released.status_code == 200
    assert Image.open(io.BytesIO(released.content)).size == (640, 480)


def test_the_slow_fault_trickles_the_whole_body(
    standin: RunflowStandin, finished: dict[str, Any]
) -> None:
    standin.file_faults = {0: "slow"}
    standin.file_slow_seconds = 0.4
    url = urls_of(finished)[0]

    started = time.monotonic()
    response = httpx.get(url)
    elapsed = time.monotonic() - started

    assert elapsed >= 0.3
    assert len(response.content) == finished["output"]["model_data"]["masks"][0]["file_size"]


def test_file_delay_holds_every_file(standin: RunflowStandin, finished: dict[str, Any]) -> None:
    standin.file_delay = 0.2

    started = time.monotonic()
    response = httpx.get(urls_of(finished)[2])

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


# --- by hand ------------------------------------------------------------------------------------


def test_by_hand_runs_finish_and_call_back(receiver: Receiver) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runflow_standin",
            "--port",
            "0",
            "--key",
            "k1",
            "--quiet",
            "--complete-after",
            "0.2",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().split()[-1]
        with httpx.Client(base_url=base_url, headers={"Authorization": "Bearer k1"}) as client:
            body = {
                "input": {"image_url": IMAGE_640, "prompt": "cat"},
                "callback_url": receiver.url,
            }
            run = client.post(RUNS, json=body).json()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not receiver.received:
                time.sleep(0.02)
            done = client.get(f"/v1/runs/{run['id']}").json()
        assert done["status_code"] == "succeeded"
        assert json.loads(receiver.received[0].body)["run_id"] == run["id"]
    finally:
        process.send_signal(signal.SIGTERM)  # SIGINT is ignored when pytest runs as a job
        assert process.wait(timeout=5) == 0
