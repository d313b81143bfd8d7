"""Media in an S3-compatible bucket (moto's server, over a real socket): what a run stores lands
in the bucket and nowhere on the disk, the app's URLs check access and then redirect to a
short-lived signed link, deleting a run deletes its objects, a bucket that goes away for a
while makes runs wait (and finish once it is back), and uploads say so instead of failing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.conf import settings
from django.test import Client

from segmentation import runs
from segmentation.models import Mask, Run, SourceImage
from tests.factories import (
    drain,
    form_data,
    image_bytes,
    settled,
    submit,
    upload,
    worker_until_idle,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _quick(fast_polling, settings, standin) -> None:
    standin.complete_after = 0.0
    settings.SAM3WEB_STORAGE_RETRY_FIRST = 0.2
    settings.SAM3WEB_STORAGE_RETRY_MAX = 0.5


def media_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def finished(client: Client, standin, **overrides) -> Run:
    run = submit(client, **overrides)
    drain(settled(run))
    return Run.objects.select_related("image").get(pk=run.pk)


def followed(response) -> httpx.Response:
    """The signed link a redirect leads to, fetched as a browser would (no cookies)."""
    assert response.status_code == 302, response.status_code
    return httpx.get(response["Location"])


def test_a_runs_files_land_in_the_bucket_and_nothing_on_the_disk(
    signed_in, standin, object_storage
) -> None:
    server, bucket = object_storage
    run = finished(signed_in, standin)
    assert run.artifacts == Run.Artifacts.DONE and run.mask_count >= 1
    keys = server.keys(bucket)
    names = [
        run.image.file.name,
        run.image.thumbnail.name,
        run.overlay.name,
        run.thumbnail.name,
        *(m.file.name for m in run.masks.all()),
    ]
    assert all(names) and set(names) <= set(keys), (names, keys)
    assert any(k.startswith("masks/") for k in keys)
    assert media_files() == []


def test_the_apps_urls_check_access_then_redirect_to_a_signed_link(
    signed_in, teammate_client, stranger, standin, object_storage
) -> None:
    run = finished(signed_in, standin)
    image = run.image
    urls = {
        f"/images/{image.pk}/": image.content_type,
        f"/images/{image.pk}/thumb/": "image/jpeg",
        f"/images/{image.pk}/display/": image.content_type,
        f"/runs/{run.pk}/overlay.png": "image/png",
        f"/runs/{run.pk}/thumb.jpg": "image/jpeg",
        f"/runs/{run.pk}/masks/1.png": "image/png",
    }
    for url, content_type in urls.items():
        refused = stranger.get(url)
        assert refused.status_code == 302 and refused["Location"].startswith("/accounts/login")
        response = teammate_client.get(url)
        assert response.status_code == 302, url
        link = urlsplit(response["Location"])
        endpoint = settings.STORAGES["default"]["OPTIONS"]["endpoint_url"]  # type: ignore[index]
        assert link.netloc == urlsplit(endpoint).netloc
        query = parse_qs(link.query)
        assert query["X-Amz-Expires"] == [str(settings.SAM3WEB_S3_URL_TTL)]
        # The redirect is not cached for longer than the link lives.
        max_age = int(response["Cache-Control"].rsplit("=", 1)[1])
        assert "private" in response["Cache-Control"]
        assert 0 < max_age < settings.SAM3WEB_S3_URL_TTL
        fetched = followed(response)
        assert fetched.status_code == 200, (url, fetched.text[:300])
        assert fetched.headers["content-type"] == content_type
    original = followed(teammate_client.get(f"/images/{image.pk}/"))
    assert original.content == image_bytes("cat.jpg")
    # Without its signature, the bucket refuses: it is private.
    bare = response["Location"].split("?", 1)[0]
    assert httpx.get(bare).status_code == 403
    assert teammate_client.get(f"/runs/{run.pk}/masks/9.png").status_code == 404


def test_a_share_link_redirects_to_signed_links_and_stops_when_revoked(
    signed_in, stranger, standin, object_storage
) -> None:
    run = finished(signed_in, standin)
    signed_in.post(f"/runs/{run.pk}/share/")
    token = Run.objects.get(pk=run.pk).share_token
    page = stranger.get(f"/s/{token}/")
    assert page.status_code == 200
    for path in ("image", "image/display", "overlay.png", "masks/1.png"):
        url = f"/s/{token}/{path}"
        response = stranger.get(url)
        assert response.status_code == 302, (url, response.status_code)
        assert int(response["Cache-Control"].rsplit("=", 1)[1]) < settings.SAM3WEB_S3_URL_TTL
        assert response["Referrer-Policy"] == "no-referrer"
        assert followed(response).status_code == 200
    # The viewer reads mask pixels from crops the app makes itself: same origin, no redirect.
    crop = stranger.get(f"/s/{token}/masks/1.crop.png")
    assert crop.status_code == 200 and crop["Content-Type"] == "image/png"
    signed_in.post(f"/runs/{run.pk}/unshare/")
    assert stranger.get(f"/s/{token}/masks/1.png").status_code == 404


def test_deleting_a_run_deletes_its_objects_and_keeps_a_shared_image(
    signed_in, standin, object_storage
) -> None:
    server, bucket = object_storage
    first = finished(signed_in, standin)
    second = finished(signed_in, standin)  # the same photo: stored once, shared by both
    assert first.image_id == second.image_id
    image_keys = {first.image.file.name, first.image.thumbnail.name}
    first_keys = {first.overlay.name, first.thumbnail.name} | {
        m.file.name for m in first.masks.all()
    }
    assert runs.delete_run(first.pk)
    keys = set(server.keys(bucket))
    assert not first_keys & keys
    assert image_keys <= keys  # the other run still shows it
    assert runs.delete_run(second.pk)
    assert server.keys(bucket) == []
    assert not SourceImage.objects.exists() and not Mask.objects.exists()


def test_a_worker_process_stores_in_the_same_bucket(signed_in, standin, object_storage) -> None:
    server, bucket = object_storage
    run = submit(signed_in)
    deadline = time.monotonic() + 60
    while not Run.objects.get(pk=run.pk).settled:
        assert time.monotonic() < deadline, "the worker did not finish the run"
        worker_until_idle(standin)
        time.sleep(0.1)
    run.refresh_from_db()
    assert run.artifacts == Run.Artifacts.DONE
    assert {m.file.name for m in run.masks.all()} <= set(server.keys(bucket))
    assert media_files() == []


def keeps_waiting(still: Callable[[Run], bool]) -> None:
    """The worker keeps trying, and the run keeps waiting, for as long as the bucket is away."""
    for _ in range(3):
        drain(lambda: True)
        time.sleep(0.3)
    run = Run.objects.get()
    assert still(run), run


def test_while_the_bucket_is_unreachable_runs_wait_and_finish_once_it_is_back(
    signed_in, standin, object_storage
) -> None:
    server, bucket = object_storage
    standin.complete_after = None  # the run ends when the test says, below
    run = submit(signed_in)  # the image is stored, and sent, while the bucket is there
    drain(lambda: Run.objects.get(pk=run.pk).provider_run_id != "")
    server.stop()
    try:
        standin.finish(Run.objects.get(pk=run.pk).provider_run_id)
        drain(lambda: bool(Run.objects.get(pk=run.pk).artifact_notes))
        waiting = Run.objects.get(pk=run.pk)
        assert waiting.status == Run.Status.SUCCEEDED
        assert waiting.artifacts == Run.Artifacts.PENDING
        assert waiting.artifact_notes[0].startswith("Waiting for storage")
        page = signed_in.get(f"/runs/{run.pk}/").content.decode()
        assert "Waiting for storage" in page
        keeps_waiting(lambda r: r.artifacts == Run.Artifacts.PENDING)
    finally:
        server.start()
    drain(lambda: Run.objects.get(pk=run.pk).artifacts == Run.Artifacts.DONE)
    done = Run.objects.get(pk=run.pk)
    assert done.mask_count >= 1 and done.overlay.name in server.keys(bucket)
    assert not any(n.startswith("Waiting for storage") for n in done.artifact_notes)
    page = signed_in.get(f"/runs/{run.pk}/").content.decode()
    assert "Waiting for storage" not in page
    assert f"{done.mask_count} instance" in page


def test_a_run_whose_image_the_bucket_cannot_give_waits_and_is_sent_once_it_is_back(
    signed_in, standin, object_storage
) -> None:
    server, bucket = object_storage
    run = submit(signed_in)  # stored while the bucket is there; its submit is queued
    server.stop()
    try:
        drain(lambda: Run.objects.get(pk=run.pk).error_code != "")
        waiting = Run.objects.get(pk=run.pk)
        assert waiting.status == Run.Status.PENDING  # not "not submitted": nothing was sent
        assert waiting.error_code == "STORAGE_UNAVAILABLE"
        assert standin.runs == {}
        page = signed_in.get(f"/runs/{run.pk}/").content.decode()
        assert "Waiting for storage: the image is sent to Runflow" in page
        keeps_waiting(lambda r: r.status == Run.Status.PENDING and r.submit_attempts >= 2)
    finally:
        server.start()
    drain(lambda: Run.objects.get(pk=run.pk).artifacts == Run.Artifacts.DONE)
    done = Run.objects.get(pk=run.pk)
    assert done.status == Run.Status.SUCCEEDED and done.error_code == ""
    assert len(standin.runs_for_client_ref(str(run.pk))) == 1
    page = signed_in.get(f"/runs/{run.pk}/").content.decode()
    assert "Waiting for storage" not in page


def test_an_upload_while_the_bucket_is_unreachable_gets_a_form_error(
    signed_in, object_storage
) -> None:
    server, bucket = object_storage
    server.stop()
    try:
        response = signed_in.post("/runs/new/", form_data(image=upload("cat.jpg")))
    finally:
        server.start()
    assert response.status_code == 400  # the form, again, with what went wrong
    assert "file storage cannot be reached" in response.content.decode()
    assert not Run.objects.exists() and not SourceImage.objects.exists()
    assert server.keys(bucket) == []
