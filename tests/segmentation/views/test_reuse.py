"""Same prompts on other images (/runs/<id>/reuse/): through real POSTs, real image files, the
real database, and for the submit the real worker against the Runflow stand-in."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from html import unescape
from typing import Any

import pytest
from django.test import Client

from segmentation.forms import MAX_REUSE_IMAGES as MAX_IMAGES
from segmentation.models import Run, SourceImage
from segmentation.reuse import outside_text, scale_box, scale_point
from segmentation.schema import box_fits, point_fits
from tests.factories import make_run, png_bytes, run_worker, upload
from tests.image_server import ImageServer
from tests.sample_images import IMAGES

pytestmark = pytest.mark.django_db

POINTS = [
    {"x": 100, "y": 120, "label": 1},
    {"x": 350, "y": 250, "label": 1, "object_id": 1},
    {"x": 440, "y": 290, "label": 0},
]
BOX = {"x_min": 50, "y_min": 40, "x_max": 400, "y_max": 290}
OPTIONS = {
    "apply_mask": False,
    "return_multiple_masks": True,
    "max_masks": 7,
    "include_scores": True,
    "include_boxes": False,
    "sync_mode": False,
    "output_format": "webp",
}


def source_run(owner, *, prompt: str = "cat", points=None, boxes=None, metadata=None) -> Run:
    """A run made on cat.jpg (451×300) with options other than the form's, as the new-run form
    would have stored it."""
    data: dict[str, Any] = {"prompt": prompt, **OPTIONS}
    if points:
        data["point_prompts"] = points
    if boxes:
        data["box_prompts"] = boxes
    return make_run(owner, input=data, metadata=metadata)


@pytest.fixture
def source(owner) -> Run:
    return source_run(owner, points=POINTS, boxes=[BOX], metadata={"project": "demo", "n": 3})


def url_of(run: Run) -> str:
    return f"/runs/{run.id}/reuse/"


def new_runs(source: Run) -> list[Run]:
    return list(Run.objects.filter(parent=source).select_related("image").order_by("created_at"))


def banner(response) -> str:
    """The errors shown above the form, as a person reads them."""
    html = response.content.decode()
    block = re.search(r'<div class="errors banner" role="alert">(.*?)</div>', html, re.S)
    assert block, "no error banner on the page"
    return unescape(re.sub(r"<[^>]+>", " ", block.group(1)))


def field_errors(response, field: str) -> str:
    html = response.content.decode()
    block = re.search(rf'id="field-{field}".*?</div>', html, re.S)
    assert block, f"no field {field} on the page"
    return " ".join(unescape(m) for m in re.findall(r"<li>(.*?)</li>", block.group(0), re.S))


def kept_values(response) -> list[str]:
    return re.findall(r'name="kept" value="([^"]+)"', response.content.decode())


# --- the page -------------------------------------------------------------------------------


def test_the_page_shows_the_runs_prompt_and_a_form_for_many_images(
    signed_in: Client, source: Run
) -> None:
    response = signed_in.get(url_of(source))
    assert response.status_code == 200
    html = unescape(response.content.decode())
    assert re.search(r'<input type="file" name="images"[^>]*multiple', html)
    assert 'name="image_urls"' in html
    assert "cat" in html and "(100, 120)" in html and "[50, 40] → [400, 290]" in html
    assert "webp" in html and "&quot;project&quot;" not in html and '"project": "demo"' in html
    assert f"up to {MAX_IMAGES} images" in html
    assert "451×300" in html
    # Three choices for points and boxes that do not fit: by default the one that starts runs
    # on any image, scaling them; keeping them exactly stops where they do not fit.
    assert re.search(r'name="fit" value="scale"[^>]*checked', response.content.decode())
    assert not re.search(r'name="fit" value="keep"[^>]*checked', response.content.decode())
    assert 'value="drop"' in html and 'value="scale"' in html
    assert html.count('class="pt ') == 3 and html.count('class="box"') == 1


def test_a_text_only_run_is_not_asked_about_points(signed_in: Client, owner) -> None:
    run = source_run(owner)
    html = signed_in.get(url_of(run)).content.decode()
    assert 'name="fit"' not in html


def test_it_needs_a_signed_in_teammate(client: Client, source: Run) -> None:
    response = client.get(url_of(source))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    response = client.post(url_of(source), {"images": [upload("coffee.jpg")]})
    assert response.status_code == 302
    assert new_runs(source) == []


@pytest.mark.parametrize(
    "path",
    [
        "/runs/00000000-0000-0000-0000-000000000000/reuse/",
        "/runs/not-a-run/reuse/",
        "/runs/1234/reuse/",
    ],
)
def test_an_unknown_or_malformed_run_is_404(signed_in: Client, source: Run, path: str) -> None:
    assert signed_in.get(path).status_code == 404
    assert signed_in.post(path, {"images": [upload("coffee.jpg")]}).status_code == 404
    assert Run.objects.count() == 1


# --- starting runs --------------------------------------------------------------------------


def test_two_images_start_two_runs_with_the_same_prompt_and_options(
    signed_in: Client, source: Run, owner, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(
            url_of(source), {"images": [upload("coffee.jpg"), upload("astronaut.jpg")]}
        )
    assert response.status_code == 302
    runs = new_runs(source)
    assert [r.image.original_name for r in runs] == ["coffee.jpg", "astronaut.jpg"]
    assert [(r.image.width, r.image.height) for r in runs] == [(600, 400), (512, 512)]
    for run in runs:
        assert run.input == source.input
        assert run.metadata == {"project": "demo", "n": 3}
        assert run.parent == source
        assert run.owner == owner
        assert run.status == Run.Status.PENDING
        assert run.task_id  # the submit was queued with the run
        assert (run.prompt_text, run.point_count, run.box_count) == ("cat", 3, 1)
    assert runs[0].image.file.read() == (IMAGES / "coffee.jpg").read_bytes()
    # The summary of what was started: this page, with the new runs named.
    location = response["Location"]
    assert location.startswith(url_of(source) + "?")
    assert all(f"started={r.id}" in location for r in runs)
    page = signed_in.get(location)
    html = unescape(page.content.decode())
    assert "Started 2 runs with the prompt and options of this run:" in html
    assert "Started 2 runs</h2>" in html
    assert f'href="/runs/{runs[0].id}/">coffee.jpg</a>' in html
    assert f'href="/runs/{runs[1].id}/">astronaut.jpg</a>' in html
    assert "3 of 3 points · 1 of 1 box" in html


def test_the_summary_shows_only_runs_made_from_this_run(
    signed_in: Client, source: Run, owner
) -> None:
    other = source_run(owner, prompt="dog")
    query = f"?started={other.id}&started=nonsense&started={source.id}"
    response = signed_in.get(url_of(source) + query)
    assert response.status_code == 200
    assert "Started" not in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_new_runs_reach_runflow_with_their_own_images(
    signed_in: Client, owner, standin
) -> None:
    source = source_run(owner, points=POINTS[:1], boxes=[BOX], metadata={"project": "demo"})
    response = signed_in.post(
        url_of(source), {"images": [upload("coffee.jpg"), upload("rocket.webp")]}
    )
    assert response.status_code == 302
    run_worker()
    runs = new_runs(source)
    assert [r.status for r in runs] == [Run.Status.QUEUED, Run.Status.QUEUED]
    calls = standin.create_calls()
    assert len(calls) == 2
    by_ref = {c.json["client_ref"]: c.json for c in calls}
    for run, name, kind in ((runs[0], "coffee.jpg", "jpeg"), (runs[1], "rocket.webp", "webp")):
        body = by_ref[str(run.id)]
        sent = dict(body["input"])
        header, b64 = sent.pop("image_url").split(",", 1)
        assert header == f"data:image/{kind};base64"
        assert base64.b64decode(b64) == (IMAGES / name).read_bytes()
        assert sent == source.input
        assert body["metadata"] == {"project": "demo"}


@pytest.mark.django_db(transaction=True)
def test_pasted_urls_are_fetched_like_the_new_run_form_does(
    signed_in: Client, source: Run, settings
) -> None:
    settings.SAM3WEB_FETCH_ALLOW_PRIVATE = True  # the test server lives on 127.0.0.1
    with ImageServer() as server:
        coffee, astronaut = server.url("/images/coffee.jpg"), server.url("/images/astronaut.jpg")
        response = signed_in.post(
            url_of(source),
            {"image_urls": f"{coffee}\n\n  {astronaut}  \n", "images": [upload("rocket.jpg")]},
        )
    assert response.status_code == 302
    runs = new_runs(source)
    assert sorted(r.source_url for r in runs) == ["", astronaut, coffee]
    assert {(r.image.width, r.image.height) for r in runs} == {(600, 400), (512, 512), (640, 427)}


def test_a_private_url_is_refused_with_its_line(signed_in: Client, source: Run) -> None:
    response = signed_in.post(
        url_of(source),
        {"image_urls": "http://169.254.169.254/latest/meta-data", "images": [upload("coffee.jpg")]},
    )
    assert response.status_code == 400
    errors = field_errors(response, "image_urls")
    assert "Line 1 (http://169.254.169.254/latest/meta-data)" in errors
    assert "private or local" in errors
    assert new_runs(source) == []


def test_without_a_runflow_key_nothing_starts(signed_in: Client, source: Run, settings) -> None:
    settings.RUNFLOW_API_KEY = ""
    page = signed_in.get(url_of(source)).content.decode()
    assert "Runflow is not configured" in page
    response = signed_in.post(url_of(source), {"images": [upload("coffee.jpg")]})
    assert response.status_code == 400
    assert "no Runflow API key is configured" in banner(response)
    assert new_runs(source) == []
    assert len(kept_values(response)) == 1  # kept for when a key is set


# --- bad input ------------------------------------------------------------------------------


def test_no_image_at_all(signed_in: Client, source: Run) -> None:
    response = signed_in.post(url_of(source), {"image_urls": "  \n "})
    assert response.status_code == 400
    assert "Choose one or more image files" in field_errors(response, "images")
    assert new_runs(source) == []


def test_a_broken_image_among_good_ones_starts_nothing_and_keeps_the_good_ones(
    signed_in: Client, source: Run
) -> None:
    images_before = SourceImage.objects.count()
    response = signed_in.post(
        url_of(source),
        {
            "images": [
                upload("coffee.jpg"),
                upload("truncated.jpg", (IMAGES / "bad" / "truncated.jpg").read_bytes()),
                upload("astronaut.jpg"),
                upload("notes.jpg", b"just some text, not a picture"),
            ]
        },
    )
    assert response.status_code == 400
    errors = field_errors(response, "images")
    assert "truncated.jpg: This image file is damaged or incomplete" in errors
    assert "notes.jpg: This file is not an image we can read" in errors
    assert "coffee.jpg" not in errors
    assert Run.objects.count() == 1  # only the source: no half-made batch
    # The good images are stored once and offered again, ticked, without choosing them again.
    assert SourceImage.objects.count() == images_before + 2
    html = unescape(response.content.decode())
    assert "coffee.jpg (600×400)" in html and "astronaut.jpg (512×512)" in html
    kept = kept_values(response)
    assert len(kept) == 2

    response = signed_in.post(url_of(source), {"kept": kept})
    assert response.status_code == 302
    assert [r.image.original_name for r in new_runs(source)] == ["coffee.jpg", "astronaut.jpg"]


def test_an_empty_file_is_named(signed_in: Client, source: Run) -> None:
    response = signed_in.post(
        url_of(source), {"images": [upload("empty.jpg", b""), upload("coffee.jpg")]}
    )
    assert response.status_code == 400
    assert "empty.jpg:" in field_errors(response, "images")
    assert new_runs(source) == []


def test_too_many_files_are_refused_before_any_is_read(signed_in: Client, source: Run) -> None:
    images_before = SourceImage.objects.count()
    files = [upload(f"p{n}.png", png_bytes(20 + n, 20)) for n in range(MAX_IMAGES + 1)]
    response = signed_in.post(url_of(source), {"images": files})
    assert response.status_code == 400
    assert f"At most {MAX_IMAGES} images at a time (you gave {MAX_IMAGES + 1})" in field_errors(
        response, "images"
    )
    assert new_runs(source) == []
    assert SourceImage.objects.count() == images_before


def test_kept_images_count_towards_the_limit_and_are_not_lost(
    signed_in: Client, source: Run
) -> None:
    first = signed_in.post(
        url_of(source), {"images": [upload("coffee.jpg"), upload("bad.jpg", b"nope")]}
    )
    [kept] = kept_values(first)
    files = [upload(f"p{n}.png", png_bytes(460 + n, 300)) for n in range(MAX_IMAGES)]
    response = signed_in.post(url_of(source), {"kept": [kept], "images": files})
    assert response.status_code == 400
    assert f"you gave {MAX_IMAGES + 1}" in field_errors(response, "images")
    assert len(kept_values(response)) == 1  # coffee.jpg is still there


def test_a_tampered_kept_image_is_refused(signed_in: Client, source: Run) -> None:
    first = signed_in.post(
        url_of(source), {"images": [upload("coffee.jpg"), upload("bad.jpg", b"nope")]}
    )
    [kept] = kept_values(first)
    response = signed_in.post(url_of(source), {"kept": [kept[:-3] + "abc"]})
    assert response.status_code == 400
    assert "has expired: choose that image again" in field_errors(response, "images")
    assert new_runs(source) == []


def test_the_same_image_twice_runs_once(signed_in: Client, source: Run) -> None:
    response = signed_in.post(
        url_of(source), {"images": [upload("coffee.jpg"), upload("coffee.jpg")]}
    )
    assert response.status_code == 302
    assert len(new_runs(source)) == 1
    page = signed_in.get(response["Location"]).content.decode()
    assert "Given more than once, run once: coffee.jpg." in page


# --- points and boxes that do not fit ------------------------------------------------------


def small(name: str = "photo.png", size: tuple[int, int] = (300, 200)):
    return upload(name, png_bytes(*size))


def test_points_that_do_not_fit_stop_everything_with_a_message_per_image(
    signed_in: Client, source: Run
) -> None:
    response = signed_in.post(
        url_of(source),
        {"images": [upload("coffee.jpg"), small(), small("thin.png", (451, 100))]},
    )
    assert response.status_code == 400
    text = banner(response)
    assert "photo.png is 300×200: 2 of 3 points and the box lie outside it." in text
    assert "thin.png is 451×100: all 3 points and the box lie outside it." in text
    assert "coffee.jpg" not in text  # 600×400: everything fits
    assert "drop them or to scale them" in text
    assert new_runs(source) == []
    assert len(kept_values(response)) == 3  # nothing to upload again


def test_dropping_what_does_not_fit(signed_in: Client, source: Run) -> None:
    first = signed_in.post(url_of(source), {"images": [upload("coffee.jpg"), small()]})
    response = signed_in.post(url_of(source), {"kept": kept_values(first), "fit": "drop"})
    assert response.status_code == 302
    coffee, photo = new_runs(source)
    assert coffee.input == source.input  # everything fitted
    expected = {**source.input, "point_prompts": [POINTS[0]]}
    del expected["box_prompts"]  # it reached past the 300×200 image
    assert photo.input == expected
    assert (photo.point_count, photo.box_count) == (1, 0)
    page = unescape(signed_in.get(response["Location"]).content.decode())
    assert (
        "photo.png is 300×200: 2 of 3 points and the box lie outside it: dropped for this image."
        in page
    )
    assert "1 of 3 points · 0 of 1 box" in page


def test_scaling_to_each_image(signed_in: Client, source: Run) -> None:
    response = signed_in.post(
        url_of(source), {"images": [small("double.png", (902, 600))], "fit": "scale"}
    )
    assert response.status_code == 302
    [run] = new_runs(source)
    assert run.input["point_prompts"] == [
        {"x": 201, "y": 241, "label": 1},
        {"x": 701, "y": 501, "label": 1, "object_id": 1},
        {"x": 881, "y": 581, "label": 0},
    ]
    assert run.input["box_prompts"] == [{"x_min": 100, "y_min": 80, "x_max": 800, "y_max": 580}]


def test_scaled_prompts_always_stay_inside_the_image() -> None:
    src = (451, 300)
    for dst in ((1, 1), (2, 3), (300, 200), (451, 300), (1000, 17), (4032, 3024)):
        for p in ({"x": 0, "y": 0}, {"x": 450, "y": 299}, {"x": 225, "y": 150}):
            q = scale_point(p, src, dst)
            assert 0 <= q["x"] < dst[0] and 0 <= q["y"] < dst[1]
        for b in (BOX, {"x_min": 0, "y_min": 0, "x_max": 451, "y_max": 300}):
            c = scale_box(b, src, dst)
            assert 0 <= c["x_min"] < c["x_max"] <= dst[0]
            assert 0 <= c["y_min"] < c["y_max"] <= dst[1]
        assert scale_point(POINTS[1], src, src) == POINTS[1]  # same size: unchanged
        assert scale_box(BOX, src, src) == BOX


@pytest.fixture
def points_only(owner) -> Run:
    return source_run(owner, prompt="", points=[{"x": 400, "y": 280, "label": 1}])


def test_a_points_only_run_cannot_run_where_no_point_fits(
    signed_in: Client, points_only: Run
) -> None:
    response = signed_in.post(url_of(points_only), {"images": [small(), upload("coffee.jpg")]})
    assert response.status_code == 400
    text = banner(response)
    assert "photo.png is 300×200: the point lies outside it" in text
    assert "no text prompt, so it cannot run on this image as it is" in text

    kept = kept_values(response)
    response = signed_in.post(url_of(points_only), {"kept": kept, "fit": "drop"})
    assert response.status_code == 400
    assert "with them dropped nothing is left to run on this image" in banner(response)
    assert new_runs(points_only) == []

    response = signed_in.post(url_of(points_only), {"kept": kept, "fit": "scale"})
    assert response.status_code == 302
    photo, coffee = new_runs(points_only)
    assert photo.input["point_prompts"] == [{"x": 266, "y": 187, "label": 1}]
    assert coffee.input["point_prompts"] == [{"x": 532, "y": 374, "label": 1}]
    assert photo.input["prompt"] == coffee.input["prompt"] == ""


def test_leaving_out_the_image_that_does_not_fit(signed_in: Client, points_only: Run) -> None:
    first = signed_in.post(url_of(points_only), {"images": [upload("coffee.jpg"), small()]})
    coffee, _photo = kept_values(first)
    response = signed_in.post(url_of(points_only), {"kept": [coffee]})
    assert response.status_code == 302
    [run] = new_runs(points_only)
    assert run.image.original_name == "coffee.jpg"
    assert run.input["point_prompts"] == [{"x": 400, "y": 280, "label": 1}]


@pytest.fixture(autouse=True)
def _no_stray_fetches(connections: list) -> Iterator[None]:
    # Any URL test that escaped to a real address would fail here (see conftest.connections).
    yield


def test_a_broken_file_and_a_misfit_are_told_together(signed_in: Client, source: Run) -> None:
    response = signed_in.post(
        url_of(source), {"images": [small(), upload("bad.jpg", b"<html>nope</html>")]}
    )
    assert response.status_code == 400
    assert "bad.jpg: This file is a web page" in field_errors(response, "images")
    assert "photo.png is 300×200: 2 of 3 points and the box lie outside it." in banner(response)
    html = unescape(response.content.decode())
    assert "2 of 3 points and the box lie outside it.</p>" in html  # beside the image too
    assert new_runs(source) == []


def test_what_fits_an_image_is_what_the_run_form_accepts() -> None:
    # The last pixel is width - 1; a box's x_max/y_max may reach the edge (as in RunForm).
    assert point_fits({"x": 299, "y": 199}, 300, 200)
    assert not point_fits({"x": 300, "y": 0}, 300, 200)
    assert not point_fits({"x": 0, "y": 200}, 300, 200)
    assert box_fits({"x_min": 0, "y_min": 0, "x_max": 300, "y_max": 200}, 300, 200)
    assert not box_fits({"x_min": 0, "y_min": 0, "x_max": 301, "y_max": 200}, 300, 200)
    assert not box_fits({"x_min": 10, "y_min": 10, "x_max": 20, "y_max": 201}, 300, 200)


@pytest.mark.parametrize(
    ("counts", "text"),
    [
        ((0, 3, 0, 1), ""),
        ((1, 1, 0, 0), "the point lies"),
        ((1, 3, 0, 0), "1 of 3 points lies"),
        ((2, 2, 0, 0), "both points lie"),
        ((0, 0, 1, 1), "the box lies"),
        ((2, 3, 1, 1), "2 of 3 points and the box lie"),
        ((4, 4, 3, 3), "all 4 points and all 3 boxes lie"),
    ],
)
def test_the_outside_sentence_reads_right(counts: tuple[int, int, int, int], text: str) -> None:
    assert outside_text(*counts) == text


def test_the_form_posted_twice_starts_its_runs_once(signed_in: Client, source: Run) -> None:
    page = signed_in.get(url_of(source))
    key = re.search(r'name="submission_key" value="([0-9a-f]{32})"', page.content.decode())
    assert key, "the form carries no submission key"
    data = lambda: {  # noqa: E731 - a fresh upload each time
        "images": [upload("coffee.jpg"), upload("astronaut.jpg")],
        "submission_key": key.group(1),
    }
    first = signed_in.post(url_of(source), data())
    again = signed_in.post(url_of(source), data())
    assert len(new_runs(source)) == 2
    assert again["Location"] == first["Location"]
    html = unescape(signed_in.get(again["Location"]).content.decode())
    assert "This form was already submitted: here are the runs it started." in html
    assert "Started 2 runs</h2>" in html


def test_the_started_list_is_asked_for_again_until_every_run_is_done(
    signed_in: Client, source: Run
) -> None:
    signed_in.post(url_of(source), {"images": [upload("coffee.jpg")]})
    [run] = new_runs(source)
    page = signed_in.get(f"{url_of(source)}?started={run.id}").content.decode()
    assert f"?started={run.id}&amp;part=started" in page and 'hx-trigger="every 1s"' in page
    part = signed_in.get(f"{url_of(source)}?started={run.id}&part=started")
    assert part.status_code == 200
    html = part.content.decode()
    assert "Waiting to submit" in html and "<html" not in html and "<form" not in html

    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, mask_count=3)
    done = signed_in.get(f"{url_of(source)}?started={run.id}&part=started")
    assert done.status_code == 286  # htmx: stop polling
    assert "3 instances" in done.content.decode() and "hx-trigger" not in done.content.decode()
