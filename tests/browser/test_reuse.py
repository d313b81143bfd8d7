"""Same prompts on other images, in Debian's Chromium through Playwright: choose several files
at once, start one run per image, see them reach Runflow; and the page that says which points
do not fit an image, with nothing to upload again."""

from __future__ import annotations

import pytest

from segmentation.models import Batch, Run
from tests.browser.helpers import serious, shot
from tests.factories import prompted_run
from tests.sample_images import IMAGES

pytestmark = pytest.mark.django_db(transaction=True)

POINTS = [
    {"x": 100, "y": 120, "label": 1},
    {"x": 440, "y": 290, "label": 0},
]
BOX = {"x_min": 50, "y_min": 40, "x_max": 400, "y_max": 290}


def test_two_images_start_two_runs(page, worker, standin, live_server, owner) -> None:  # noqa: F811
    standin.complete_after = 0.5
    source = prompted_run(owner, points=POINTS, boxes=[BOX], metadata={"project": "demo"})
    page.goto(f"{live_server.url}/runs/{source.id}/reuse/")
    assert page.get_by_role("heading", name="Same prompts on other images").is_visible()
    assert page.locator("svg circle.pt").count() == 2
    assert serious(page) == []

    page.get_by_label("Image files").set_input_files(
        [str(IMAGES / "coffee.jpg"), str(IMAGES / "astronaut.jpg")]
    )
    page.get_by_role("button", name="Start runs").click()
    page.get_by_role("heading", name="Started 2 runs").wait_for()
    assert page.get_by_text("Started 2 runs with the prompt and options of this run:").count() == 1
    # They are kept together as a small batch, a link away.
    assert page.get_by_role("link", name="a batch").get_attribute("href") == (
        f"/batches/{Batch.objects.get(source_run=source).pk}/"
    )
    assert page.get_by_role("link", name="coffee.jpg").count() == 1
    assert page.get_by_role("link", name="astronaut.jpg").count() == 1

    # The worker sends both to Runflow and Runflow finishes them: the list follows, live.
    page.locator("#started .badge-succeeded").nth(1).wait_for(timeout=30_000)
    page.get_by_text("All of them are done").wait_for()
    runs = Run.objects.filter(parent=source)
    assert all(r.status == Run.Status.SUCCEEDED and r.settled for r in runs)
    found = page.locator("#started tbody").inner_text()
    assert found.count("instance") == 2, found
    assert len(standin.runs) == 2

    # The same prompt and options; the points and boxes scaled to each image (the default).
    def without_prompts(data: dict) -> dict:
        return {k: v for k, v in data.items() if k not in ("point_prompts", "box_prompts")}

    for run in runs:
        assert without_prompts(run.input) == without_prompts(source.input)
        assert (run.point_count, run.box_count) == (2, 1)
    shot(page, "reuse")
    # Done: the list no longer asks for news.
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "part=started" in r.url else None)
    page.wait_for_timeout(1500)
    assert asked == []

    page.get_by_role("link", name="coffee.jpg").click()
    page.wait_for_url("**/runs/*/")
    assert page.get_by_role("link", name="an earlier run").count() == 1  # links back


def test_points_that_do_not_fit_are_explained_and_the_upload_kept(
    page,  # noqa: F811
    worker,  # noqa: F811
    standin,
    live_server,
    owner,
) -> None:
    source = prompted_run(owner, points=POINTS, boxes=[BOX])
    page.goto(f"{live_server.url}/runs/{source.id}/reuse/")
    # horse.png is 400×328: the exclude point at x 440 lies outside it; the box just fits.
    page.get_by_label("Image files").set_input_files(
        [str(IMAGES / "coffee.jpg"), str(IMAGES / "horse.png")]
    )
    page.get_by_label("Keep them at the same pixels, and stop if any lies outside an image").check()
    page.get_by_role("button", name="Start runs").click()
    alert = page.locator(".errors.banner")
    alert.wait_for()
    assert "horse.png is 400×328: 1 of 2 points lies outside it." in alert.inner_text()
    assert Run.objects.filter(parent=source).count() == 0
    kept = page.get_by_role("checkbox")
    assert kept.count() == 2 and all(kept.nth(i).is_checked() for i in range(2))
    assert serious(page) == []
    shot(page, "reuse-does-not-fit")

    page.get_by_label("Drop the points and boxes that lie outside an image").check()
    page.get_by_role("button", name="Start runs").click()
    page.get_by_role("heading", name="Started 2 runs").wait_for()
    assert page.get_by_text("1 of 2 points lies outside it: dropped for this image.").count() == 1
    horse = Run.objects.get(parent=source, image__original_name="horse.png")
    assert horse.input["point_prompts"] == [POINTS[0]]
    assert horse.input["box_prompts"] == [BOX]


def test_by_default_the_prompts_are_scaled_to_each_image_and_the_runs_start(
    page,  # noqa: F811
    worker,  # noqa: F811
    standin,
    live_server,
    owner,
) -> None:
    source = prompted_run(owner, points=POINTS, boxes=[BOX])  # on cat.jpg, 451×300
    page.goto(f"{live_server.url}/runs/{source.id}/reuse/")
    scale = page.get_by_label(
        "Scale them to each image’s size (the same place relative to the image)"
    )
    assert scale.is_checked()
    page.get_by_label("Image files").set_input_files(str(IMAGES / "horse.png"))  # 400×328
    page.get_by_role("button", name="Start runs").click()
    page.get_by_role("heading", name="Started 1 run").wait_for()
    assert page.get_by_text("horse.png is 400×328: the points and boxes are scaled to it").count()
    horse = Run.objects.get(parent=source)
    assert horse.input["point_prompts"] == [
        {"x": 89, "y": 131, "label": 1},
        {"x": 390, "y": 317, "label": 0},
    ]
    assert all(0 <= p["x"] < 400 and 0 <= p["y"] < 328 for p in horse.input["point_prompts"])
    shot(page, "reuse-scaled")
