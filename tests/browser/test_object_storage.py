"""The run page in Chromium with media in a bucket (moto's server): the photo and overlay load
through the app's URLs and their redirects to signed links, and the viewer draws the masks
(their pixels come from the app's own crops, so the canvas is never tainted)."""

from __future__ import annotations

import pytest

from segmentation.models import Run
from tests.browser.helpers import run_to_the_end, viewer_ready

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
