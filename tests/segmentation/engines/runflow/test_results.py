"""From a run at Runflow to our own copies of its masks: polling, the artifact task, and the
faults on the way (expired, hanging and lying mask URLs, stale runs, restarts). The real
worker, the real client and the stand-in on a real socket."""

from __future__ import annotations

import io
import json
import time
from html import unescape

import pytest
from django.test import Client
from PIL import Image

from sam3web import settings as defaults
from segmentation.models import Mask, Run
from segmentation.tasks import poll_delay
from tests.factories import colour_at, drain, run_worker, settled, submit, upload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_polling")]


def png(response) -> Image.Image:
    return Image.open(io.BytesIO(b"".join(response.streaming_content)))


def test_polling_brings_the_result_and_our_copies(signed_in: Client, standin) -> None:
    standin.complete_after = 0.2
    run = submit(
        signed_in,
        prompt="",
        box_prompts='[{"x_min": 100, "y_min": 50, "x_max": 300, "y_max": 250}]',
    )
    drain(settled(run))
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    assert run.result_source == "poll"
    assert run.artifacts == Run.Artifacts.DONE
    assert run.cost is not None and run.duration_ms is not None
    [mask] = run.masks.all()
    assert mask.score == pytest.approx(0.95)
    # The stand-in filled an ellipse inscribed in the box: our box and area say so.
    assert mask.box == pytest.approx((100, 50, 300, 250), abs=2)
    assert mask.area == pytest.approx(3.14159 * 100 * 100, rel=0.05)
    with Image.open(mask.file) as im:
        assert im.size == (451, 300)
        assert im.getpixel((200, 150)) and not im.getpixel((105, 55))

    page = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "1 instance found" in page
    assert f'src="/runs/{run.id}/overlay.png"' in page
    assert "0.950" in page
    assert "hx-trigger" not in page  # settled: the page stops polling
    overlay = png(signed_in.get(f"/runs/{run.id}/overlay.png"))
    assert overlay.mode == "RGBA" and overlay.size == (451, 300)
    assert colour_at(overlay, (200, 150))[3] > 0 and colour_at(overlay, (5, 5))[3] == 0
    assert f'src="/runs/{run.id}/thumb.jpg"' in signed_in.get("/runs/").content.decode()


def test_the_page_still_renders_when_runflows_links_have_expired(
    signed_in: Client, standin
) -> None:
    standin.complete_after = 0.1
    run = submit(signed_in, prompt="cat")
    drain(settled(run))
    standin.expire_files()
    for url in (
        f"/runs/{run.id}/",
        f"/runs/{run.id}/overlay.png",
        f"/runs/{run.id}/thumb.jpg",
        f"/runs/{run.id}/masks/1.png",
        "/runs/",
    ):
        assert signed_in.get(url).status_code == 200, url


def test_an_exif_rotated_box_comes_back_where_it_was_drawn(signed_in: Client, standin) -> None:
    standin.complete_after = 0.1
    # A person sees a 300x451 portrait and draws a box in its top half.
    run = submit(
        signed_in,
        image=upload("cat-exif-rotated.jpg"),
        prompt="",
        box_prompts='[{"x_min": 40, "y_min": 30, "x_max": 260, "y_max": 200}]',
    )
    drain(settled(run))
    [mask] = Run.objects.get(pk=run.pk).masks.all()
    assert mask.box == pytest.approx((40, 30, 260, 200), abs=2)
    with Image.open(mask.file) as im:
        assert im.size == (300, 451)
        assert im.getbbox() == pytest.approx((40, 30, 260, 200), abs=2)


@pytest.mark.parametrize("shape", ["model_data", "top_level", "outputs_only"])
def test_every_output_shape_is_understood(signed_in: Client, standin, shape: str) -> None:
    standin.complete_after = 0.1
    standin.output_shape = shape
    run = submit(signed_in, prompt="coins", return_multiple_masks="on", max_masks="4")
    drain(settled(run))
    run.refresh_from_db()
    assert run.artifacts == Run.Artifacts.DONE
    assert run.masks.count() == 4
    assert all(m.file and m.area for m in run.masks.all())


def test_sync_mode_data_uris_and_masks_at_another_size(signed_in: Client, standin) -> None:
    standin.complete_after = 0.1
    standin.mask_scale = 0.5
    run = submit(signed_in, prompt="cat", sync_mode="on")
    drain(settled(run))
    [mask] = Run.objects.get(pk=run.pk).masks.all()
    with Image.open(mask.file) as im:
        assert im.size == (451, 300)  # resized to the image the person sees


@pytest.mark.parametrize(
    ("fault", "words"),
    [("404", "expired"), ("html", "not an image"), ("hang", ""), ("500", "")],
)
def test_a_mask_that_cannot_be_copied_is_reported_not_dropped(
    signed_in: Client, standin, fault: str, words: str
) -> None:
    standin.complete_after = 0.1
    standin.file_faults = {1: fault}
    run = submit(signed_in, prompt="coins", return_multiple_masks="on", max_masks="3")
    drain(settled(run), timeout=40)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    assert run.artifacts == Run.Artifacts.PARTIAL
    assert run.masks.count() == 3
    broken = run.masks.get(index=1)
    assert not broken.file and words in broken.error
    page = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "1 of 3 masks could not be copied" in page
    assert "Retry copying" in page

    # The link works again: retrying copies what is missing, and only that.
    standin.file_faults = {}
    if fault == "hang":
        standin.release_files()
    before = {m.index: m.file.name for m in run.masks.exclude(index=1)}
    assert signed_in.post(f"/runs/{run.id}/retry-copy/").status_code == 302
    drain(settled(run))
    run.refresh_from_db()
    assert run.artifacts == Run.Artifacts.DONE
    assert {m.index: m.file.name for m in run.masks.exclude(index=1)} == before
    assert run.masks.get(index=1).file


def test_a_run_with_no_result_goes_stale_and_can_be_checked_again(
    signed_in: Client, standin, settings
) -> None:
    settings.SAM3WEB_POLL_DEADLINE = 1
    run = submit(signed_in)
    drain(lambda: Run.objects.get(pk=run.pk).status == Run.Status.STALE)
    page = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "has not reported a result" in page and "Check again" in page

    standin.finish(Run.objects.get(pk=run.pk).provider_run_id)
    settings.SAM3WEB_POLL_DEADLINE = 60
    assert signed_in.post(f"/runs/{run.id}/check-again/").status_code == 302
    drain(settled(run))
    assert Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED


def test_a_run_runflow_no_longer_knows_says_so_stops_polling_and_can_be_sent_again(
    signed_in: Client, standin, settings
) -> None:
    settings.SAM3WEB_POLL_DEADLINE = 1
    run = submit(signed_in)
    drain(lambda: Run.objects.get(pk=run.pk).status == Run.Status.STALE)
    stale = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "has not reported a result in a long while" in stale  # not just "No result yet"
    assert "Check again" in stale and "Submit again as a new run" in stale

    # Meanwhile the run was deleted at Runflow: checking again gets 404 RUN_NOT_FOUND.
    standin.forget(Run.objects.get(pk=run.pk).provider_run_id)
    settings.SAM3WEB_POLL_DEADLINE = 60
    signed_in.post(f"/runs/{run.id}/check-again/")
    assert Run.objects.get(pk=run.pk).status == Run.Status.QUEUED  # the page follows it live
    drain(lambda: Run.objects.get(pk=run.pk).status == Run.Status.STALE)
    run.refresh_from_db()
    assert (run.error_code, run.error_http_status) == ("RUN_NOT_FOUND", 404)
    assert run.settled
    asked = len([r for r in standin.requests if r.method == "GET"])
    run_worker()  # no poll is left queued: nobody asks Runflow again
    assert len([r for r in standin.requests if r.method == "GET"]) == asked
    page = unescape(signed_in.get(f"/runs/{run.id}/").content.decode())
    assert "Runflow no longer knows this run (RUN_NOT_FOUND)" in page
    assert "Check again" not in page

    # Submit again: a new run with the same image and prompts (a fresh id, so a fresh
    # idempotency key); a double click makes it once.
    first = signed_in.post(f"/runs/{run.id}/resubmit/")
    second = signed_in.post(f"/runs/{run.id}/resubmit/", follow=True)
    again = Run.objects.get(parent=run)
    assert first["Location"] == f"/runs/{again.id}/"
    assert "This run was already sent again" in second.content.decode()
    assert (again.image, again.input, again.owner) == (run.image, run.input, run.owner)
    drain(lambda: Run.objects.get(pk=again.pk).status == Run.Status.QUEUED)
    assert len(standin.runs_for_client_ref(str(again.id))) == 1


@pytest.mark.parametrize("outcome", ["failed", "canceled"])
def test_failed_and_canceled_runs_say_why(signed_in: Client, standin, outcome: str) -> None:
    standin.complete_after = 0.1
    standin.outcome = outcome
    run = submit(signed_in)
    drain(settled(run))
    run.refresh_from_db()
    assert run.status == outcome
    assert run.artifacts == Run.Artifacts.NONE
    page = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert {"failed": "could not complete", "canceled": "canceled at Runflow"}[outcome] in page


def test_a_worker_stopped_after_the_masks_but_before_the_overlay_draws_it_at_restart(
    signed_in: Client, standin
) -> None:
    from django.core.management import call_command

    standin.complete_after = 0.1
    run = submit(signed_in)
    drain(settled(run))
    run.refresh_from_db()
    masks = {m.index: m.file.name for m in run.masks.all()}
    assert run.overlay and run.thumbnail and masks
    # As a worker stopped between showing the masks and drawing the overlay leaves it.
    run.overlay.delete(save=False)
    run.thumbnail.delete(save=False)
    Run.objects.filter(pk=run.pk).update(overlay="", thumbnail="")
    call_command("worker", "--", "--batch", "--no-startup-delay")
    run.refresh_from_db()
    assert run.artifacts == Run.Artifacts.DONE
    assert run.overlay and run.thumbnail
    assert {m.index: m.file.name for m in run.masks.all()} == masks  # kept, not copied again
    overlay = png(signed_in.get(f"/runs/{run.id}/overlay.png"))
    assert overlay.size == (run.image.width, run.image.height)


def test_a_lost_poll_chain_is_picked_up_again(signed_in: Client, standin) -> None:
    from django.core.management import call_command
    from django_tasks_db.models import DBTaskResult

    run = submit(signed_in)
    run_worker()
    assert Run.objects.get(pk=run.pk).status == Run.Status.QUEUED
    DBTaskResult.objects.filter(status="READY").delete()  # the worker died; its queue is gone
    standin.finish(Run.objects.get(pk=run.pk).provider_run_id)
    call_command("worker", "--", "--batch", "--no-startup-delay")
    drain(settled(run))
    assert Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED


def test_polls_start_early_then_back_off_to_the_cap(settings) -> None:
    """A fast run is caught within a quarter second; a slow one is soon asked only every 30 s."""
    # The configured defaults, not this module's fast polling.
    settings.SAM3WEB_POLL_FIRST = defaults.SAM3WEB_POLL_FIRST
    settings.SAM3WEB_POLL_MAX_INTERVAL = defaults.SAM3WEB_POLL_MAX_INTERVAL
    delays = [poll_delay(n) for n in range(1, 14)]
    assert 0.2 <= delays[0] <= 0.25
    assert sum(delays[:4]) < 2.5  # four looks in the first couple of seconds
    assert all(b >= a * 0.85 for a, b in zip(delays, delays[1:], strict=False))
    assert 25 <= delays[-1] <= 30


def test_a_callback_makes_polling_unnecessary(signed_in: Client, standin, settings, live_server):
    """With a public URL, Runflow calls back; the safety-net poll then finds nothing to do."""
    settings.SAM3WEB_PUBLIC_URL = live_server.url
    settings.SAM3WEB_CALLBACK_GRACE = 30
    standin.complete_after = 0.1
    standin.callback_backoff = (0.05, 0.05)
    run = submit(signed_in)
    run_worker()
    body = json.loads(standin.create_calls()[0].body)
    assert body["callback_url"].startswith(f"{live_server.url}/callbacks/runflow/{run.id}/")
    deadline = time.monotonic() + 10
    while Run.objects.get(pk=run.pk).status != Run.Status.SUCCEEDED:
        assert time.monotonic() < deadline, standin.callbacks
        time.sleep(0.02)
    run.refresh_from_db()
    assert run.result_source == "callback"
    assert run.deliveries.get().outcome == "applied"
    drain(settled(run))
    assert Mask.objects.filter(run=run).count() == 1
