"""The run page in Chromium with media in a bucket (moto's server): the photo and overlay load
through the app's URLs and their redirects to signed links, and the viewer draws the masks
(their pixels come from the app's own crops, so the canvas is never tainted); exports download
from the bucket."""

from __future__ import annotations

import zipfile

import pytest

from segmentation.models import Run
from tests.browser.helpers import run_to_the_end, viewer_ready
from tests.factories import add_masks, answered_batch, ellipse, make_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_polling")]


def test_the_run_page_shows_the_masks_from_the_bucket(
    page, page_errors, live_server, owner, standin, object_storage
) -> None:
    server, bucket = object_storage
    standin.complete_after = 0.0
    run = run_to_the_end(owner)
    assert run.artifacts == Run.Artifacts.DONE and run.mask_count >= 1
    from_bucket: list[str] = []
    crops: list[tuple[str, int]] = []

    def seen(response) -> None:
        if response.url.startswith(server.endpoint_url):
            from_bucket.append(response.url)
        if ".crop.png" in response.url:
            crops.append((response.url, response.status))

    page.on("response", seen)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    viewer_ready(page)
    # The photo came from the bucket, by a signed link, and decoded.
    width = page.evaluate(
        "() => Math.max(...[...document.images].map((i) => i.complete ? i.naturalWidth : 0))"
    )
    assert width > 0
    assert any(f"/{bucket}/" in url and "X-Amz-Signature" in url for url in from_bucket)
    # Each mask's crop came from the app itself (its pixels are read for hit-testing).
    assert page.locator(".sv-list tr[data-number]").count() == run.mask_count
    page.wait_for_function(
        "(n) => performance.getEntriesByType('resource')"
        ".filter((e) => e.name.includes('.crop.png')).length >= n",
        arg=run.mask_count,
    )
    assert crops and all(url.startswith(live_server.url) and status == 200 for url, status in crops)
    assert page_errors == []


def test_exports_download_from_the_bucket_under_their_own_names(
    page, page_errors, live_server, owner, object_storage
) -> None:
    """The run page's export links and the batch page's dataset buttons: the app writes the
    file to the bucket and the browser downloads it from there, named as the app names it."""
    server, bucket = object_storage
    run = make_run(owner, image="coins.png", input={"prompt": "coins"}, artifacts="done")
    add_masks(run, [(ellipse((40, 40, 140, 140), (384, 303)), (40, 40, 141, 141))])
    run = Run.objects.get(pk=run.pk)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    with page.expect_download() as download:
        page.get_by_role("link", name="ZIP of masks").click()
    assert download.value.url.startswith(server.endpoint_url)
    assert download.value.suggested_filename == f"coins-{run.pk.hex[:8]}.zip"
    with zipfile.ZipFile(download.value.path()) as archive:
        assert "instances.json" in archive.namelist()

    batch = answered_batch(owner)
    page.goto(f"{live_server.url}/batches/{batch.pk}/")
    page.get_by_label("Include the images (ZIPs)").check()
    with page.expect_download() as download:
        page.get_by_role("button", name="COCO ZIP").click()
    assert download.value.url.startswith(server.endpoint_url)
    assert download.value.suggested_filename == "cats-2026.coco.zip"
    with zipfile.ZipFile(download.value.path()) as archive:
        names = archive.namelist()
    assert any(n.endswith("0001-cat.jpg") for n in names), names
    keys = [k for k in server.keys(bucket) if k.startswith("exports/")]
    assert len(keys) == 2
    assert page_errors == []
