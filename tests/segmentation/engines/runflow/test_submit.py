"""From form POST to a run at Runflow: the real view, the real database worker, the real
client, and the Runflow stand-in on a real socket."""

from __future__ import annotations

import base64
import json

import pytest
from django.test import Client

from segmentation.models import Run
from tests.factories import form_data, run_worker, upload
from tests.sample_images import IMAGES

pytestmark = pytest.mark.django_db(transaction=True)


def submit(client: Client, **overrides) -> Run:
    response = client.post("/runs/new/", form_data(**overrides))
    assert response.status_code == 302, response.content.decode()[:2000]
    return Run.objects.get(pk=response["Location"].split("/")[2])


def test_a_run_reaches_runflow_once_with_exactly_what_was_asked(signed_in, standin) -> None:
    points = [{"x": 200, "y": 150, "label": 1}]
    run = submit(signed_in, point_prompts=json.dumps(points), metadata='{"project": "demo"}')
    assert run.status == Run.Status.PENDING
    assert run.task_id  # queued for the worker once the request committed

    run_worker()

    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    [call] = standin.create_calls()
    assert call.headers["authorization"] == "Bearer test-key"
    assert call.headers["idempotency-key"] == str(run.id)
    body = call.json
    assert body["client_ref"] == str(run.id)
    assert body["metadata"] == {"project": "demo"}
    assert "callback_url" not in body or body["callback_url"] is None
    sent = dict(body["input"])
    image_url = sent.pop("image_url")
    assert sent == run.input
    assert sent["prompt"] == "cat" and sent["point_prompts"] == points
    # Small image: inline, and the bytes are exactly the stored image.
    header, b64 = image_url.split(",", 1)
    assert header == "data:image/jpeg;base64"
    assert base64.b64decode(b64) == (IMAGES / "cat.jpg").read_bytes()
    assert run.image_delivery == "inline"
    assert run.provider_run_id in standin.runs
    assert run.provider_response is not None and run.request_body is not None
    assert run.provider_response["id"] == run.provider_run_id
    assert run.request_body["input"]["prompt"] == "cat"
    assert run.submitted_at and run.submit_attempts == 1


def test_a_large_image_goes_through_the_asset_upload(signed_in, standin, settings) -> None:
    settings.RUNFLOW_INLINE_MAX_BYTES = 100_000
    run = submit(signed_in, image=upload("large-4032x3024.jpg"))
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert run.image_delivery == "asset"
    [call] = standin.create_calls()
    asset_url = call.json["input"]["image_url"]
    assert asset_url == run.asset_url
    asset_id = asset_url.rstrip("/").rsplit("/", 1)[-1]
    assert standin.assets[asset_id]["data"] == (IMAGES / "large-4032x3024.jpg").read_bytes()


def test_a_rotated_image_is_sent_as_the_person_sees_it(signed_in, standin) -> None:
    from PIL import Image

    run = submit(signed_in, image=upload("cat-exif-rotated.jpg"))
    run_worker()
    [call] = standin.create_calls()
    data = base64.b64decode(call.json["input"]["image_url"].split(",", 1)[1])
    import io

    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (300, 451)
        assert im.getexif().get(0x0112, 1) == 1
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED


@pytest.mark.parametrize(
    ("key", "status", "words"),
    [
        ("wrong-key", 401, "API key"),
        ("broke-key", 402, "credit"),
    ],
)
def test_a_refused_run_shows_runflows_reason_and_can_be_submitted_again(
    signed_in, standin, settings, key, status, words
) -> None:
    settings.RUNFLOW_API_KEY = key
    run = submit(signed_in)
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.NOT_SUBMITTED
    assert run.error_http_status == status
    assert len(standin.create_calls()) == 1  # no retry on 4xx
    page = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert words in page
    assert "Submit again" in page

    settings.RUNFLOW_API_KEY = "test-key"
    response = signed_in.post(f"/runs/{run.id}/resubmit/")
    assert response.status_code == 302
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert run.error_message == ""
    assert len(standin.runs) == 1


def test_422_field_messages_are_shown(signed_in, standin) -> None:
    standin.scripted.append(
        (
            422,
            {
                "code": "VALIDATION_ERROR",
                "message": "Input validation failed",
                "errors": [{"loc": ["input", "max_masks"], "msg": "must be at most 16 here"}],
            },
        )
    )
    run = submit(signed_in)
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.NOT_SUBMITTED
    assert run.error_code == "VALIDATION_ERROR"
    page = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "must be at most 16 here" in page
    assert "max_masks" in page


def test_rate_limits_are_waited_out(signed_in, standin) -> None:
    standin.rate_limit_next = 2
    standin.retry_after = "0"
    run = submit(signed_in)
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert len(standin.create_calls()) == 3
    assert len(standin.runs) == 1


def test_an_unavailable_model_leaves_a_run_to_submit_again(signed_in, standin) -> None:
    standin.unavailable_next = 5
    run = submit(signed_in)
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.NOT_SUBMITTED
    assert run.error_http_status == 503
    assert "5 attempts" in run.error_message or "unavailable" in run.error_message.lower()
    signed_in.post(f"/runs/{run.id}/resubmit/")
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert len(standin.runs) == 1


def test_a_lost_answer_does_not_make_a_second_run(signed_in, standin, settings) -> None:
    # Runflow records the run but answers after our timeout; the retry must not duplicate it.
    settings.RUNFLOW_TIMEOUT = 1.0
    standin.create_delay = 1.5
    run = submit(signed_in)
    run_worker()
    run.refresh_from_db()
    # The client never gave up on the run it may have made: it either replayed the create
    # with the same Idempotency-Key or found the run by its client_ref.
    [provider_run] = standin.runs_for_client_ref(str(run.id))
    assert len(standin.runs) == 1
    assert run.status == Run.Status.QUEUED
    assert run.provider_run_id == provider_run["id"]


def test_resubmitting_twice_queues_once(signed_in, standin, settings) -> None:
    settings.RUNFLOW_API_KEY = "wrong-key"
    run = submit(signed_in)
    run_worker()
    settings.RUNFLOW_API_KEY = "test-key"
    signed_in.post(f"/runs/{run.id}/resubmit/")
    signed_in.post(f"/runs/{run.id}/resubmit/")
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert len(standin.runs) == 1
    assert signed_in.post(f"/runs/{run.id}/resubmit/").status_code == 302  # harmless now


def test_the_status_fragment_polls_until_nothing_will_change(signed_in, standin, settings) -> None:
    run = submit(signed_in)
    fragment = signed_in.get(f"/runs/{run.id}/status/", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert 'hx-trigger="every 1s [!window.sam3webLongPoll]"' in html  # the fallback poll
    assert "Waiting to submit" in html
    assert "<html" not in html  # only the fragment

    # Polling with the version already shown: nothing to swap.
    import re

    version = re.search(r'hx-get="[^"]*\?v=([0-9a-f]+)"', html)
    assert version is not None, "the fragment polls with the version it shows"
    shown = version.group(1)
    unchanged = signed_in.get(f"/runs/{run.id}/status/?v={shown}", headers={"HX-Request": "true"})
    assert unchanged.status_code == 204

    settings.RUNFLOW_API_KEY = "wrong-key"
    run_worker()
    fragment = signed_in.get(f"/runs/{run.id}/status/", headers={"HX-Request": "true"})
    assert fragment.status_code == 286  # htmx stops polling
    assert "hx-trigger" not in fragment.content.decode()
    assert "Not submitted" in fragment.content.decode()


def test_the_run_page_shows_the_image_prompts_and_options(signed_in, standin) -> None:
    run = submit(
        signed_in,
        point_prompts='[{"x": 10, "y": 20, "label": 1}, {"x": 30, "y": 40, "label": 0}]',
        box_prompts='[{"x_min": 5, "y_min": 6, "x_max": 70, "y_max": 80, "object_id": 1}]',
    )
    html = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert f'src="/images/{run.image_id}/display/"' in html  # the display copy (or original)
    assert 'viewBox="0 0 451 300"' in html
    assert '<circle class="pt pos" cx="10" cy="20"' in html
    assert '<circle class="pt neg" cx="30" cy="40"' in html
    assert '<rect class="box" x="5" y="6" width="65" height="74"' in html
    for option in ("include_scores", "include_boxes", "max_masks", "output_format", "sync_mode"):
        assert option in html


def test_edit_as_a_new_run_prefills_image_prompts_and_options(signed_in, standin) -> None:
    import re

    run = submit(
        signed_in,
        prompt="whiskers",
        point_prompts='[{"x": 10, "y": 20, "label": 0}]',
        metadata='{"project": "demo"}',
        output_format="webp",
        include_boxes=None,
    )
    html = signed_in.get(f"/runs/new/?from={run.id}").content.decode()
    assert 'value="whiskers"' in html
    assert "&quot;label&quot;: 0" in html
    assert "&quot;project&quot;: &quot;demo&quot;" in html
    assert re.search(r'<option value="webp"[^>]*selected', html)
    assert not re.search(r'name="include_boxes"[^>]*checked', html)
    staged = re.search(r'name="staged_image" value="([^"]+)"', html)
    assert staged is not None, "the image is offered again"
    token = staged.group(1)
    assert f'name="parent" value="{run.id}"' in html

    # Submitting it with a change makes a second run on the same image, linked to the first.
    data = {
        "parent": str(run.id),
        "staged_image": token,
        "prompt": "whiskers",
        "point_prompts": '[{"x": 10, "y": 20, "label": 0}, {"x": 30, "y": 30, "label": 1}]',
        "max_masks": "3",
        "output_format": "webp",
    }
    response = signed_in.post("/runs/new/", data)
    assert response.status_code == 302
    second = Run.objects.exclude(pk=run.pk).get()
    assert second.image_id == run.image_id
    assert len(second.points) == 2
    assert second.parent == run
    assert "edited from" in signed_in.get(f"/runs/{second.id}/").content.decode()
    assert "edited into" in signed_in.get(f"/runs/{run.id}/").content.decode()


def test_same_image_new_prompt_keeps_image_and_options_only(signed_in, standin) -> None:
    import re

    run = submit(
        signed_in,
        prompt="whiskers",
        point_prompts='[{"x": 10, "y": 20, "label": 0}]',
        metadata='{"project": "demo"}',
        output_format="webp",
    )
    assert (
        f"/runs/new/?from={run.id}&amp;keep=image"
        in signed_in.get(run.get_absolute_url()).content.decode()
    )
    html = signed_in.get(f"/runs/new/?from={run.id}&keep=image").content.decode()
    assert 'value="whiskers"' not in html and "&quot;label&quot;: 0" not in html
    assert f'name="parent" value="{run.id}"' not in html
    assert "&quot;project&quot;: &quot;demo&quot;" in html
    assert re.search(r'<option value="webp"[^>]*selected', html)
    staged = re.search(r'name="staged_image" value="([^"]+)"', html)
    assert staged is not None, "the image is offered again"
    token = staged.group(1)
    response = signed_in.post(
        "/runs/new/",
        {"staged_image": token, "prompt": "ears", "max_masks": "3", "output_format": "png"},
    )
    assert response.status_code == 302
    second = Run.objects.exclude(pk=run.pk).get()
    assert second.image_id == run.image_id and second.prompt == "ears" and second.parent is None


def test_edit_from_an_unknown_run_shows_an_empty_form(signed_in) -> None:
    assert signed_in.get("/runs/new/?from=nope").status_code == 200
    assert signed_in.get("/runs/new/?from=00000000-0000-0000-0000-000000000000").status_code == 200


def test_images_are_served_with_the_type_we_determined(signed_in, standin) -> None:
    run = submit(signed_in, image=upload("rocket.webp"))
    response = signed_in.get(f"/images/{run.image_id}/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content) == (IMAGES / "rocket.webp").read_bytes()


@pytest.mark.parametrize(
    "name", ["large-4032x3024.jpg", "coffee-rgba.png", "coffee-palette.png", "camera-16bit.png"]
)
def test_history_shows_small_thumbnails(signed_in, standin, name) -> None:
    import io

    from PIL import Image

    run = submit(signed_in, image=upload(name))
    assert f'src="/images/{run.image_id}/thumb/"' in signed_in.get("/runs/").content.decode()
    response = signed_in.get(f"/images/{run.image_id}/thumb/")
    assert response["Content-Type"] == "image/jpeg"
    data = b"".join(response.streaming_content)
    assert len(data) < 30_000
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) <= 240 and max(thumb.size) >= 180


def test_a_run_nobody_picks_up_says_the_worker_may_be_down(signed_in, standin) -> None:
    import datetime as dt

    run = submit(signed_in)
    assert "Is it running?" not in signed_in.get(f"/runs/{run.id}/").content.decode()
    Run.objects.filter(pk=run.pk).update(created_at=run.created_at - dt.timedelta(minutes=2))
    assert "Is it running?" in signed_in.get(f"/runs/{run.id}/status/").content.decode()


def test_a_broken_store_ends_the_run_with_a_reason_not_a_loop(signed_in, standin) -> None:
    from django_tasks_db.models import DBTaskResult

    run = submit(signed_in)
    run.image.file.delete(save=False)  # the stored image is gone
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.NOT_SUBMITTED
    assert "FileNotFoundError" in run.error_message
    assert standin.create_calls() == []
    assert DBTaskResult.objects.get().status == "FAILED"  # the traceback is kept there
    assert "Submit again" in signed_in.get(f"/runs/{run.id}/").content.decode()
