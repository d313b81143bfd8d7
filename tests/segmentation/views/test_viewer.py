"""The viewer's data: viewer.json and the per-instance mask crops, against real runs finished
by the stand-in and real mask files."""

from __future__ import annotations

import io

import pytest
from django.core.cache import cache
from django.test import Client
from PIL import Image

from segmentation.imaging.render import PALETTE
from segmentation.models import Run
from tests.factories import drain, ellipse, run_with_masks, settled, submit

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_polling")]


def body(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def open_png(response) -> Image.Image:
    im = Image.open(io.BytesIO(body(response)))
    im.load()
    return im


def object_pixels(im: Image.Image) -> Image.Image:
    """A crop as a "1" image: object where it is opaque."""
    return im.convert("RGBA").getchannel("A").point(lambda a: 255 if a >= 128 else 0, "1")


@pytest.fixture
def finished_run(signed_in: Client, standin) -> Run:
    standin.complete_after = 0.1
    run = submit(signed_in, prompt="coins", return_multiple_masks="on", max_masks="5")
    drain(settled(run))
    run.refresh_from_db()
    assert run.artifacts == Run.Artifacts.DONE
    return run


def test_viewer_json_describes_every_instance(signed_in: Client, finished_run: Run) -> None:
    response = signed_in.get(f"/runs/{finished_run.id}/viewer.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "private" in response["Cache-Control"]
    data = response.json()
    image = finished_run.image
    assert data["run"] == str(finished_run.id)
    assert data["settled"] is True
    # The viewer draws the display copy (here the original itself: coins.png is small) over
    # the original's pixels, and loads the original when zoomed in past the copy.
    assert data["image"] == {
        "url": f"/images/{image.pk}/display/",
        "full_url": f"/images/{image.pk}/",
        "width": image.width,
        "height": image.height,
    }
    assert data["prompts"] == {"points": [], "boxes": []}
    instances = data["instances"]
    assert [i["number"] for i in instances] == [1, 2, 3, 4, 5]
    for inst, mask in zip(instances, finished_run.masks.all(), strict=True):
        r, g, b = PALETTE[mask.index % len(PALETTE)]
        assert inst["index"] == mask.index
        assert inst["score"] == pytest.approx(mask.score)
        assert mask.box is not None  # every mask of the finished run has a box
        assert inst["box"] == list(mask.box)
        assert inst["area"] == mask.area
        assert inst["colour"] == f"#{r:02x}{g:02x}{b:02x}"
        assert inst["error"] == ""
        assert inst["crop_url"].startswith(
            f"/runs/{finished_run.id}/masks/{mask.number}.crop.png?v="
        )
        assert inst["mask_url"] == f"/runs/{finished_run.id}/masks/{mask.number}.png"
        # The crop holds the whole box (and the whole mask, checked below).
        x, y, w, h = inst["crop"]
        x0, y0, x1, y1 = inst["box"]
        assert x <= x0 and y <= y0 and x + w >= x1 and y + h >= y1
        assert min(x, y) >= 0 and x + w <= image.width and y + h <= image.height
    # Scores as the stand-in gives them: 0.95, 0.91, ...
    assert [i["score"] for i in instances] == pytest.approx([0.95, 0.91, 0.87, 0.83, 0.79])


def test_viewer_json_revalidates_with_its_etag(signed_in: Client, finished_run: Run) -> None:
    first = signed_in.get(f"/runs/{finished_run.id}/viewer.json")
    again = signed_in.get(f"/runs/{finished_run.id}/viewer.json", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    assert again["ETag"] == first["ETag"]


def test_each_crop_is_the_stored_mask_within_its_region(
    signed_in: Client, finished_run: Run
) -> None:
    instances = signed_in.get(f"/runs/{finished_run.id}/viewer.json").json()["instances"]
    warm = [body(signed_in.get(inst["crop_url"])) for inst in instances]
    cache.clear()  # and made again from the mask files: the same bytes
    for inst, mask, made in zip(instances, finished_run.masks.all(), warm, strict=True):
        response = signed_in.get(inst["crop_url"])
        assert body(response) == made
        assert response.status_code == 200
        assert response["Content-Type"] == "image/png"
        cache_control = response["Cache-Control"]
        assert "private" in cache_control and "immutable" in cache_control
        assert "max-age=" in cache_control
        crop = open_png(response)
        x, y, w, h = inst["crop"]
        assert crop.size == (w, h)
        # A tiny PNG: 1-bit palette, transparent background, white object pixels.
        assert crop.mode == "P" and crop.info.get("transparency") == 0
        rgba = crop.convert("RGBA")
        counted = rgba.getcolors()  # None only past 256 colours
        assert counted is not None
        colours = {c for _, c in counted}
        assert colours <= {(0, 0, 0, 0), (255, 255, 255, 255)}
        with Image.open(mask.file) as full:
            stored = full.convert("1")
            assert object_pixels(crop).tobytes() == stored.crop((x, y, x + w, y + h)).tobytes()
            # Nothing of the mask lies outside the crop.
            assert object_pixels(crop).histogram()[255] == mask.area == stored.histogram()[255]
        assert len(body(response)) < len(body(signed_in.get(inst["mask_url"])))


def test_a_crop_also_covers_mask_pixels_outside_runflows_box(signed_in: Client, owner) -> None:
    # Runflow's box is a model output: here it misses the mask's right part.
    run = run_with_masks(owner, [(ellipse((100, 50, 300, 200)), (100, 50, 250, 201))])
    [inst] = signed_in.get(f"/runs/{run.id}/viewer.json").json()["instances"]
    assert inst["box"] == [100, 50, 250, 201]
    assert inst["crop"] == [100, 50, 201, 151]  # box ∪ the mask's own bounding box
    crop = open_png(signed_in.get(inst["crop_url"]))
    assert crop.size == (201, 151)
    assert (
        object_pixels(crop).tobytes()
        == ellipse((100, 50, 300, 200)).crop((100, 50, 301, 201)).tobytes()
    )


def test_masks_without_box_without_pixels_or_without_file(signed_in: Client, owner) -> None:
    run = run_with_masks(
        owner,
        [
            (ellipse((10, 10, 40, 30)), None),  # no box from Runflow: the mask's own
            (Image.new("1", (451, 300), 0), None),  # an empty mask: nothing to draw
            (None, (5, 5, 50, 50)),  # could not be copied
        ],
    )
    data = signed_in.get(f"/runs/{run.id}/viewer.json").json()
    assert data["prompts"]["points"] == [{"x": 10, "y": 20, "label": 1}]
    own, empty, missing = data["instances"]
    assert own["box"] is None and own["crop"] == [10, 10, 31, 21]
    assert signed_in.get(own["crop_url"]).status_code == 200
    assert empty["crop"] is None and empty["crop_url"] is None
    assert signed_in.get(f"/runs/{run.id}/masks/2.crop.png").status_code == 404
    assert missing["crop_url"] is None and missing["mask_url"] is None
    assert missing["error"] == "Runflow's link for this mask has expired."
    assert signed_in.get(f"/runs/{run.id}/masks/3.crop.png").status_code == 404
    assert signed_in.get(f"/runs/{run.id}/masks/4.crop.png").status_code == 404


def test_a_deleted_mask_file_is_a_404(signed_in: Client, owner) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    mask = run.masks.get()
    assert mask.file.name  # the mask was stored
    mask.file.storage.delete(mask.file.name)
    assert signed_in.get(f"/runs/{run.id}/masks/1.crop.png").status_code == 404


def test_unknown_runs_are_404(signed_in: Client) -> None:
    missing = "7b0c4a52-0000-4000-8000-000000000000"
    assert signed_in.get(f"/runs/{missing}/viewer.json").status_code == 404
    assert signed_in.get(f"/runs/{missing}/masks/1.crop.png").status_code == 404


def test_a_teammate_sees_it_and_a_stranger_is_sent_to_sign_in(
    client: Client, owner, teammate
) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    urls = (f"/runs/{run.id}/viewer.json", f"/runs/{run.id}/masks/1.crop.png")
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    client.force_login(teammate)
    for url in urls:
        assert client.get(url).status_code == 200
    assert client.post(urls[0]).status_code == 405


def test_the_run_page_includes_the_viewer(signed_in: Client, owner) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    html = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert f'data-viewer="/runs/{run.id}/viewer.json"' in html
    assert "sam3web/viewer.js" in html and "sam3web/viewer.css" in html
    # Without JavaScript, the server's composite and the table are what people see; the
    # viewer takes over that table (data-list) rather than listing the instances again.
    assert 'class="overlay-wrap"' in html and 'class="instances sv-list" id="instances"' in html
    assert html.count("<table") == 1
    assert f'data-viewer="/runs/{run.id}/viewer.json" data-list="instances"' in html
    assert 'class="sam3-viewer" data-viewer' in html and " hidden>" in html
    assert "<script>" not in html  # no inline scripts
