"""Exports of a run's results: the ZIP of masks, JSON, COCO (checked with pycocotools, the
reference implementation) and the composite PNG, with the viewer's "what I see" parameters.
Real finished runs: the real worker copies the Runflow stand-in's masks into our storage."""

from __future__ import annotations

import io
import json
import time
import zipfile
from typing import Any

import numpy as np
import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from segmentation import exports
from segmentation.imaging.render import PALETTE
from segmentation.models import Mask, Run
from tests.factories import COINS_BOXES, coins_run, colour_at, drain, settled, submit
from tests.sample_images import IMAGES

CENTRES = [(85, 85), (280, 200)]


@pytest.fixture
def coins(signed_in: Client, standin) -> Run:
    run = coins_run(signed_in, standin)
    assert run.artifacts == Run.Artifacts.DONE and run.masks.count() == 2
    return run


def content(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def fetch(client: Client, run: Run, fmt: str, query: str = "", status: int = 200):
    url = f"/runs/{run.id}/export/{fmt}" + (f"?{query}" if query else "")
    response = client.get(url)
    assert response.status_code == status, (url, content(response)[:500])
    return response


def fetch_json(client: Client, run: Run, fmt: str, query: str = "") -> Any:
    response = fetch(client, run, fmt, query)
    assert response["Content-Type"] == "application/json; charset=utf-8"
    return json.loads(content(response))


def open_zip(client: Client, run: Run, query: str = "") -> zipfile.ZipFile:
    response = fetch(client, run, "masks.zip", query)
    assert response["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(content(response)))


def composite(client: Client, run: Run, query: str = "") -> Image.Image:
    response = fetch(client, run, "composite.png", query)
    assert response["Content-Type"] == "image/png"
    return Image.open(io.BytesIO(content(response)))


def stored(mask: Mask) -> np.ndarray:
    with mask.file.open("rb") as f, Image.open(f) as im:
        assert im.mode == "1"
        return np.array(im)


def picture(run: Run) -> Image.Image:
    with run.image.file.open("rb") as f, Image.open(f) as im:
        return im.convert("RGB")


def blend(under: tuple[int, ...], colour: tuple[int, int, int], alpha: int = 128) -> tuple:
    return tuple(
        round(c * alpha / 255 + u * (255 - alpha) / 255) for u, c in zip(under, colour, strict=True)
    )


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 2) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def decode(segmentation: dict[str, Any]) -> np.ndarray:
    return coco_mask.decode(segmentation).astype(bool)


pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_polling"),
    # pycocotools 2.0.x with NumPy 2: harmless, and not ours.
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


# --- the four formats ---------------------------------------------------------------------------


def test_the_zip_holds_every_mask_as_stored_and_instances_json(signed_in: Client, coins) -> None:
    response = fetch(signed_in, coins, "masks.zip")
    short = coins.id.hex[:8]
    assert response["Content-Disposition"] == f'attachment; filename="coins-{short}.zip"'
    body = content(response)
    assert response["Content-Length"] == str(len(body))
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    assert archive.namelist() == ["mask-01.png", "mask-02.png", "instances.json"]
    for mask in coins.masks.all():
        data = archive.read(f"mask-{mask.number:02d}.png")
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.mode in ("1", "L")
            assert im.size == (384, 303)
            assert set(np.unique(np.array(im.convert("L")))) <= {0, 255}
            assert np.array_equal(np.array(im).astype(bool), stored(mask))
    described = json.loads(archive.read("instances.json"))
    assert [i["file"] for i in described["instances"]] == ["mask-01.png", "mask-02.png"]
    assert all(i["exported"] for i in described["instances"])


def test_the_json_describes_the_run_and_every_instance(signed_in: Client, coins) -> None:
    response = fetch(signed_in, coins, "json")
    assert response["Content-Disposition"].endswith(f'filename="coins-{coins.id.hex[:8]}.json"')
    data = json.loads(content(response))
    run = data["run"]
    assert run["id"] == str(coins.id)
    assert run["owner"] == "ada"
    assert run["status"] == "succeeded"
    assert run["runflow_run_id"] == coins.provider_run_id and run["runflow_run_id"]
    assert run["duration_ms"] == coins.duration_ms
    assert run["cost"] == str(coins.cost) and isinstance(run["cost"], str)
    assert run["created_at"] == coins.created_at.isoformat()
    assert run["image"] == {
        "name": "coins.png",
        "width": 384,
        "height": 303,
        "content_type": "image/png",
    }
    assert data["prompts"] == {"text": "coins", "points": [], "boxes": COINS_BOXES}
    assert "image_url" not in data["options"]
    assert data["options"]["return_multiple_masks"] is True
    assert data["options"]["max_masks"] == 4
    # Prompts and options together are exactly the input as sent.
    assert {**data["options"], "prompt": "coins", "box_prompts": COINS_BOXES} == coins.input
    assert data["view"] == {"visible": None, "threshold": 0.0, "colours": {}, "opacity": 0.5}
    assert data["hidden"] == []
    masks = list(coins.masks.all())
    assert [i["number"] for i in data["instances"]] == [1, 2]
    for row, mask in zip(data["instances"], masks, strict=True):
        assert row["score"] == mask.score
        assert row["box"] == list(mask.box)
        assert row["area"] == mask.area == int(stored(mask).sum())
        assert row["colour"] == "#{:02x}{:02x}{:02x}".format(*PALETTE[mask.index])
        assert row["exported"] is True
        assert row["url"] == f"http://testserver/runs/{coins.id}/masks/{mask.number}.png"
        assert signed_in.get(row["url"]).status_code == 200
    assert [i["score"] for i in data["instances"]] == [0.95, 0.91]
    # The boxes are where the person drew them, in pixels of the image.
    for row, box in zip(data["instances"], COINS_BOXES, strict=True):
        expected = [box["x_min"], box["y_min"], box["x_max"], box["y_max"]]
        assert row["box"] == pytest.approx(expected, abs=2)


def test_coco_decodes_to_exactly_our_masks(signed_in: Client, coins) -> None:
    response = fetch(signed_in, coins, "coco")
    assert response["Content-Disposition"].endswith(
        f'filename="coins-{coins.id.hex[:8]}.coco.json"'
    )
    data = json.loads(content(response))
    assert data["images"] == [{"id": 1, "file_name": "coins.png", "width": 384, "height": 303}]
    assert data["categories"] == [{"id": 1, "name": "coins", "supercategory": ""}]
    masks = list(coins.masks.all())
    assert len(data["annotations"]) == len(masks) == 2
    for ann, mask in zip(data["annotations"], masks, strict=True):
        seg = ann["segmentation"]
        assert seg["size"] == [303, 384] and isinstance(seg["counts"], str)
        ours = stored(mask)
        assert np.array_equal(decode(seg), ours)
        # The reference implementation encodes our mask to the very same string.
        ref = coco_mask.encode(np.asfortranarray(ours.astype(np.uint8)))
        assert ref["counts"].decode() == seg["counts"]
        assert ann["area"] == int(coco_mask.area(seg)) == mask.area
        assert ann["bbox"] == list(coco_mask.toBbox(seg))
        x0, y0, x1, y1 = mask.box
        assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
        assert ann["iscrowd"] == 0 and ann["image_id"] == 1 and ann["category_id"] == 1
        assert ann["id"] == mask.number and ann["score"] == mask.score

    # pycocotools' own loader reads the file and rebuilds each mask.
    api = COCO()
    api.dataset = data
    api.createIndex()
    for mask in masks:
        assert np.array_equal(api.annToMask(api.anns[mask.number]).astype(bool), stored(mask))


def test_the_composite_paints_each_mask_in_its_colour(signed_in: Client, coins) -> None:
    response = fetch(signed_in, coins, "composite.png")
    assert response["Content-Disposition"].endswith(f'filename="coins-{coins.id.hex[:8]}.png"')
    out = Image.open(io.BytesIO(content(response)))
    assert out.size == (384, 303) and out.mode == "RGB"
    base = picture(coins)
    for (x, y), colour in zip(CENTRES, PALETTE, strict=False):
        assert close(colour_at(out, (x, y)), blend(colour_at(base, (x, y)), colour))
    # Away from every mask and box, the image is untouched.
    assert out.getpixel((5, 295)) == base.getpixel((5, 295))
    # The boxes are drawn in the instance's colour on their left edge, and a tag sits above.
    for mask, colour in zip(coins.masks.all(), PALETTE, strict=False):
        x0, y0, x1, y1 = mask.box
        assert out.getpixel((x0, (y0 + y1) // 2)) == colour
        assert out.getpixel((x0 + 1, y0 - 2)) == colour  # the tag's background


# --- what I see ---------------------------------------------------------------------------------


def test_what_i_see_filters_and_recolours_every_format(signed_in: Client, coins) -> None:
    base = picture(coins)
    c1, c2 = CENTRES

    # Only instance 2 visible.
    assert open_zip(signed_in, coins, "visible=2").namelist() == ["mask-02.png", "instances.json"]
    data = fetch_json(signed_in, coins, "json", "visible=2")
    assert [i["number"] for i in data["instances"]] == [2] and data["hidden"] == [1]
    assert data["view"]["visible"] == [2]
    assert [a["id"] for a in fetch_json(signed_in, coins, "coco", "visible=2")["annotations"]] == [
        2
    ]
    out = composite(signed_in, coins, "visible=2")
    assert out.getpixel(c1) == base.getpixel(c1)
    assert close(colour_at(out, c2), blend(colour_at(base, c2), PALETTE[1]))

    # Nothing visible: still a valid export, with nothing in it.
    assert open_zip(signed_in, coins, "visible=").namelist() == ["instances.json"]
    assert fetch_json(signed_in, coins, "coco", "visible=")["annotations"] == []

    # The threshold hides instance 2 (0.91) and keeps instance 1 (0.95); a score equal to the
    # threshold is shown.
    data = fetch_json(signed_in, coins, "json", "threshold=0.93")
    assert [i["number"] for i in data["instances"]] == [1] and data["hidden"] == [2]
    assert [
        i["number"] for i in fetch_json(signed_in, coins, "json", "threshold=0.91")["instances"]
    ] == [1, 2]
    assert [
        a["id"] for a in fetch_json(signed_in, coins, "coco", "threshold=.93")["annotations"]
    ] == [1]
    assert fetch_json(signed_in, coins, "coco", "threshold=1")["annotations"] == []

    # Colours and opacity, as in the viewer.
    query = "colours=1:ff0000,2:00AA00&opacity=1"
    out = composite(signed_in, coins, query)
    assert out.getpixel(c1) == (255, 0, 0) and out.getpixel(c2) == (0, 170, 0)
    data = fetch_json(signed_in, coins, "json", query)
    assert [i["colour"] for i in data["instances"]] == ["#ff0000", "#00aa00"]
    assert data["view"]["colours"] == {"1": "#ff0000", "2": "#00aa00"}
    assert data["view"]["opacity"] == 1.0
    described = json.loads(open_zip(signed_in, coins, "colours=2:%2300aa00").read("instances.json"))
    assert [i["colour"] for i in described["instances"]] == ["#1f77b4", "#00aa00"]
    out = composite(signed_in, coins, "opacity=0&colours=1:ff0000")
    assert out.getpixel(c1) == base.getpixel(c1)  # no paint; only box and tag are drawn

    # Everything at once.
    query = "visible=1,2&threshold=0.5&colours=1:123456&opacity=0.25"
    out = composite(signed_in, coins, query)
    assert close(colour_at(out, c1), blend(colour_at(base, c1), (0x12, 0x34, 0x56), 64))


BAD_QUERIES = [
    ("visible=abc", "not an instance number"),
    ("visible=1,x", "not an instance number"),
    ("visible=-1", "not an instance number"),
    ("visible=1.5", "not an instance number"),
    ("visible=3", "no instance 3"),
    ("visible=0", "no instance 0"),
    ("visible=99999", "no instance 99999"),
    ("visible=999999999999999999999", "not an instance number"),
    ("visible=1,,2", "not an instance number"),
    ("visible=1&visible=2", "given 2 times"),
    ("threshold=abc", "number from 0 to 1"),
    ("threshold=1.5", "number from 0 to 1"),
    ("threshold=-0.1", "number from 0 to 1"),
    ("threshold=nan", "number from 0 to 1"),
    ("threshold=inf", "number from 0 to 1"),
    ("threshold=1e-3", "number from 0 to 1"),
    ("threshold=", "number from 0 to 1"),
    ("opacity=2", "number from 0 to 1"),
    ("opacity=0x1", "number from 0 to 1"),
    ("colours=1:red", "not a colour"),
    ("colours=1:ff00", "not a colour"),
    ("colours=1:gg0000", "not a colour"),
    ("colours=ff0000", "not instance:colour"),
    ("colours=7:ff0000", "no instance 7"),
    ("colours=1:ff0000,1:00ff00", "two colours"),
    ("colour=1:ff0000", "Unknown parameter 'colour'"),
    ("visible=" + "1," * 5000 + "1", "longer than"),
    ("threshold=" + "0" * 2000, "longer than"),
    ("x=" + "a" * 10_000, "longer than 4096"),
    ("a&" * 1500, "too many parameters"),
    ("visible=%ff", "not an instance number"),
    ("visible=1%00", "not an instance number"),
    ("visible=%D9%A1", "not an instance number"),  # an Arabic-Indic one
    ("opacity=0.5&threshold=0.2&x=1", "Unknown parameter 'x'"),
]


def test_nonsense_parameters_are_refused_with_a_reason(signed_in: Client, coins) -> None:
    for query, reason in BAD_QUERIES:
        for fmt in ("masks.zip", "json", "coco", "composite.png"):
            response = signed_in.get(f"/runs/{coins.id}/export/{fmt}?{query}")
            assert response.status_code == 400, (query, fmt)
            assert response["Content-Type"] == "text/plain; charset=utf-8"
            text = response.content.decode()
            assert reason in text, (query, text)
            assert len(text) < 300


def test_unknown_formats_and_runs_are_not_found(signed_in: Client, coins) -> None:
    for fmt in ("pdf", "masks.tar", "JSON", "mask-1", "..", "composite.jpg"):
        response = signed_in.get(f"/runs/{coins.id}/export/{fmt}")
        assert response.status_code == 404, fmt
        assert "Unknown export format" in response.content.decode()
    missing = "00000000-0000-4000-8000-000000000000"
    assert signed_in.get(f"/runs/{missing}/export/json").status_code == 404
    assert signed_in.post(f"/runs/{coins.id}/export/json").status_code == 405


def test_exports_need_a_signed_in_teammate(client: Client, signed_in: Client, coins) -> None:
    client.logout()
    for fmt in ("masks.zip", "json", "coco", "composite.png", "nonsense"):
        response = client.get(f"/runs/{coins.id}/export/{fmt}?visible=1")
        assert response.status_code == 302, fmt
        assert response["Location"].startswith("/accounts/login/?next=")


# --- masks that are not there -------------------------------------------------------------------


def test_a_mask_that_failed_to_copy_is_left_out_and_listed(signed_in: Client, standin) -> None:
    standin.file_faults = {1: "404"}
    boxes = [*COINS_BOXES, {"x_min": 10, "y_min": 180, "x_max": 120, "y_max": 290}]
    run = coins_run(signed_in, standin, boxes=boxes)
    assert run.artifacts == Run.Artifacts.PARTIAL
    broken = run.masks.get(index=1)
    assert not broken.file and broken.error

    archive = open_zip(signed_in, run)
    assert archive.namelist() == ["mask-01.png", "mask-03.png", "instances.json"]
    rows = json.loads(archive.read("instances.json"))["instances"]
    assert [(r["number"], r["exported"]) for r in rows] == [(1, True), (2, False), (3, True)]
    assert rows[1]["error"] == broken.error and "file" not in rows[1]
    rows = fetch_json(signed_in, run, "json")["instances"]
    assert rows[1]["exported"] is False and "url" not in rows[1]

    coco = fetch_json(signed_in, run, "coco")
    assert [a["id"] for a in coco["annotations"]] == [1, 3]
    assert coco["info"]["not_exported"] == [{"number": 2, "reason": broken.error}]
    out = composite(signed_in, run)
    base = picture(run)
    assert out.getpixel(CENTRES[1]) == base.getpixel(CENTRES[1])
    assert close(colour_at(out, (65, 235)), blend(colour_at(base, (65, 235)), PALETTE[2]))
    # The broken instance can still be named in a view: it is known, just not exported.
    assert fetch(signed_in, run, "json", "visible=2,3").status_code == 200

    page = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "1 of 3 masks could not be copied: it is left out" in page

    # A stored copy that has vanished since is reported the same way, not as a 500.
    gone = run.masks.get(index=2)
    assert gone.file.name  # instance 3 was copied: it has a stored file
    gone.file.storage.delete(gone.file.name)
    archive = open_zip(signed_in, run)
    assert archive.namelist() == ["mask-01.png", "instances.json"]
    rows = json.loads(archive.read("instances.json"))["instances"]
    assert rows[2] == {**rows[2], "exported": False, "error": exports.MISSING_FILE}
    assert [a["id"] for a in fetch_json(signed_in, run, "coco")["annotations"]] == [1]
    row = fetch_json(signed_in, run, "json")["instances"][2]
    assert row["exported"] is False and row["error"] == exports.MISSING_FILE
    assert composite(signed_in, run).size == (384, 303)


def test_a_run_without_copied_masks_has_nothing_to_export(signed_in: Client, standin) -> None:
    standin.file_faults = {0: "404"}
    run = coins_run(signed_in, standin, boxes=COINS_BOXES[:1])
    assert run.masks.count() == 1 and not run.masks.get().file
    for fmt in ("masks.zip", "json", "coco", "composite.png"):
        response = signed_in.get(f"/runs/{run.id}/export/{fmt}?visible=abc")
        assert response.status_code == 404
        assert "no masks to export" in response.content.decode()
    page = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "export/masks.zip" not in page
    assert "nothing to export until copying is retried" in page

    standin.file_faults = {}
    standin.outcome = "failed"
    run = submit(signed_in, prompt="cat")
    drain(settled(run))
    assert signed_in.get(f"/runs/{run.id}/export/json").status_code == 404


# --- other images -------------------------------------------------------------------------------


def test_an_exif_rotated_photo_exports_upright(signed_in: Client, standin) -> None:
    box = {"x_min": 40, "y_min": 30, "x_max": 260, "y_max": 200}
    run = coins_run(signed_in, standin, image="cat-exif-rotated.jpg", boxes=[box], prompt="")
    [mask] = run.masks.all()
    ours = stored(mask)
    assert ours.shape == (451, 300)

    coco = fetch_json(signed_in, run, "coco")
    assert coco["images"][0]["width"] == 300 and coco["images"][0]["height"] == 451
    assert coco["categories"][0]["name"] == "object"
    [ann] = coco["annotations"]
    assert ann["segmentation"]["size"] == [451, 300]
    assert np.array_equal(decode(ann["segmentation"]), ours)
    assert ann["bbox"] == pytest.approx([40, 30, 220, 170], abs=2)

    out = composite(signed_in, run)
    assert out.size == (300, 451)
    base = picture(run)  # our stored copy, already upright
    assert base.size == (300, 451)
    assert close(colour_at(out, (150, 115)), blend(colour_at(base, (150, 115)), PALETTE[0]))
    assert out.getpixel((150, 400)) == base.getpixel((150, 400))

    response = fetch(signed_in, run, "masks.zip")
    assert response["Content-Disposition"].endswith(
        f'filename="points-and-boxes-{run.id.hex[:8]}.zip"'
    )
    archive = zipfile.ZipFile(io.BytesIO(content(response)))
    with Image.open(io.BytesIO(archive.read("mask-01.png"))) as im:
        assert im.size == (300, 451)


def test_a_phone_photo_exports_quickly(signed_in: Client, standin, settings) -> None:
    settings.SAM3WEB_ARTIFACT_TIMEOUT = 20  # the stand-in takes a while to draw a 12 MP preview
    boxes = [
        {"x_min": 400, "y_min": 300, "x_max": 2400, "y_max": 2000},
        {"x_min": 2000, "y_min": 1200, "x_max": 3900, "y_max": 2900},
    ]
    run = coins_run(signed_in, standin, image="large-4032x3024.jpg", boxes=boxes, prompt="things")
    masks = list(run.masks.all())
    assert len(masks) == 2

    with masks[0].file.open("rb") as f, Image.open(f) as im:
        im.load()
        started = time.perf_counter()
        rle = rle_encode(im)
        encode_seconds = time.perf_counter() - started
    assert encode_seconds < 0.5, f"encoding a 4032×3024 mask took {encode_seconds:.3f} s"

    started = time.perf_counter()
    coco = fetch_json(signed_in, run, "coco")
    request_seconds = time.perf_counter() - started
    assert request_seconds < 2.0, f"the COCO export took {request_seconds:.3f} s"
    assert coco["annotations"][0]["segmentation"] == rle
    for ann, mask in zip(coco["annotations"], masks, strict=True):
        ours = stored(mask)
        assert ours.shape == (3024, 4032)
        assert np.array_equal(decode(ann["segmentation"]), ours)
        assert ann["area"] == int(coco_mask.area(ann["segmentation"])) == mask.area
        assert ann["bbox"] == list(coco_mask.toBbox(ann["segmentation"]))

    started = time.perf_counter()
    out = composite(signed_in, run, "opacity=0.5")
    assert out.size == (4032, 3024)
    assert time.perf_counter() - started < 6.0
    archive = open_zip(signed_in, run)
    with Image.open(io.BytesIO(archive.read("mask-02.png"))) as im:
        assert im.size == (4032, 3024)
        assert np.array_equal(np.array(im).astype(bool), stored(masks[1]))


# --- the run page -------------------------------------------------------------------------------


def test_the_run_page_offers_the_exports(signed_in: Client, coins) -> None:
    page = signed_in.get(f"/runs/{coins.id}/").content.decode()
    assert '<h2 id="exports-title">Export</h2>' in page
    for fmt, words in (
        ("masks.zip", "ZIP of masks"),
        ("json", "JSON"),
        ("coco", "COCO"),
        ("composite.png", "Composite PNG"),
    ):
        href = f'href="/runs/{coins.id}/export/{fmt}"'
        assert href in page, fmt
        link = page[page.index(href) - 200 : page.index(href) + 200]
        assert f">{words}</a>" in link
    assert 'data-instances="1,2"' in page
    # Without JavaScript the toggle stays hidden and the links export everything.
    assert "<div data-export-view hidden" in page
    assert '<label for="export-only-view">Only what I see</label>' in page
    assert '<script src="/static/sam3web/exports.js" defer></script>' in page
    assert finders.find("sam3web/exports.js")


def test_a_run_without_masks_offers_no_exports(signed_in: Client, standin) -> None:
    run = submit(signed_in)
    page = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "exports-title" not in page


# --- COCO's RLE ---------------------------------------------------------------------------------


def rle_encode(mask: Image.Image) -> dict[str, Any]:
    """The COCO RLE our export writes for a mask: its size and the compressed counts."""
    return {
        "size": [mask.height, mask.width],
        "counts": exports.rle_string(exports.rle_counts(mask)),
    }


def reference(array: np.ndarray) -> dict[str, Any]:
    ref = coco_mask.encode(np.asfortranarray(array.astype(np.uint8)))
    return {"size": list(ref["size"]), "counts": ref["counts"].decode()}


def as_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array.astype(bool))


def edge_cases() -> list[tuple[str, np.ndarray]]:
    cases = [
        ("empty", np.zeros((7, 5), bool)),
        ("full", np.ones((7, 5), bool)),
        ("1x1 empty", np.zeros((1, 1), bool)),
        ("1x1 full", np.ones((1, 1), bool)),
        ("1xN row", np.array([[0, 1, 1, 0, 1, 0, 0, 1]], bool)),
        ("Nx1 column", np.array([[1], [1], [0], [1]], bool)),
    ]
    for y, x in ((0, 0), (6, 4), (3, 2), (0, 4), (6, 0)):
        single = np.zeros((7, 5), bool)
        single[y, x] = True
        cases.append((f"single pixel at {x},{y}", single))
    starts = np.zeros((6, 9), bool)
    starts[:3, 0] = True  # the first column starts with ones: the first count is 0
    starts[2:5, 4:7] = True
    cases.append(("starts with 1", starts))
    ends = np.zeros((6, 9), bool)
    ends[-2:, -1] = True  # ends with ones: no trailing zero run
    cases.append(("ends with 1", ends))
    checker = (np.indices((16, 23)).sum(axis=0) % 2).astype(bool)
    cases.append(("checkerboard", checker))
    stripes = np.zeros((10, 10), bool)
    stripes[:, ::3] = True  # whole columns: runs longer than a column
    cases.append(("column stripes", stripes))
    # Runs longer than 2^16 (and 2^20, 2^25): deltas take 4 to 6 characters, some negative.
    big = np.zeros((600, 700), bool)
    big[:, 150:600] = True  # one run of 270,000
    big[5, 650] = True
    cases.append(("long runs", big))
    wide = np.zeros((3000, 4000), bool)
    wide[:, 1:3999] = True  # a run of 11,994,000 then short ones: large negative deltas
    wide[100, 3999] = True
    cases.append(("very long runs", wide))
    ellipse = Image.new("1", (451, 300))
    ImageDraw.Draw(ellipse).ellipse((100, 50, 299, 249), fill=1)
    cases.append(("ellipse", np.array(ellipse)))
    rng = np.random.default_rng(3)
    cases.append(("noise", rng.random((37, 41)) < 0.3))
    return cases


@pytest.mark.parametrize(("name", "array"), edge_cases(), ids=[c[0] for c in edge_cases()])
def test_rle_matches_pycocotools(name: str, array: np.ndarray) -> None:
    ours = rle_encode(as_image(array))
    assert ours == reference(array)
    assert np.array_equal(decode(ours), array)
    counts = exports.rle_counts(as_image(array))
    assert sum(counts) == array.size
    assert exports.rle_area(counts) == int(array.sum()) == int(coco_mask.area(ours))


def test_rle_counts_by_hand() -> None:
    assert exports.rle_counts(as_image(np.zeros((2, 3), bool))) == [6]
    assert exports.rle_counts(as_image(np.ones((2, 3), bool))) == [0, 6]
    # Column-major: the first column is (0, 1), the second (1, 1), the third (0, 0).
    array = np.array([[0, 1, 0], [1, 1, 0]], bool)
    assert exports.rle_counts(as_image(array)) == [1, 3, 2]
    assert exports.rle_string([0, 270_000, 5]) == reference_string([0, 270_000, 5])


def reference_string(counts: list[int]) -> str:
    """The compressed string pycocotools makes of these counts (through a mask with them)."""
    flat = np.concatenate([np.full(c, i % 2, np.uint8) for i, c in enumerate(counts)])
    return reference(flat.reshape(-1, 1).astype(bool))["counts"]


def test_rle_of_other_modes_thresholds_at_half() -> None:
    grey = Image.fromarray(np.array([[0, 127, 128, 255]], np.uint8), "L")
    assert rle_encode(grey) == reference(np.array([[0, 0, 1, 1]], bool))


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 40).flatmap(
        lambda h: st.integers(1, 40).flatmap(
            lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(
                lambda bits: np.array(bits, bool).reshape(h, w)
            )
        )
    )
)
def test_rle_matches_pycocotools_on_any_mask(array: np.ndarray) -> None:
    assert rle_encode(as_image(array)) == reference(array)


@hsettings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 300_000), min_size=1, max_size=12), st.booleans())
def test_rle_string_matches_pycocotools_on_any_counts(runs: list[int], first_set: bool) -> None:
    counts = [0, *runs] if first_set else runs
    assert exports.rle_string(counts) == reference_string(counts)


def test_a_phone_photo_sized_mask_encodes_well_under_a_second() -> None:
    mask = Image.new("1", (4032, 3024))
    draw = ImageDraw.Draw(mask)
    draw.ellipse((400, 300, 2400, 2000), fill=1)
    draw.ellipse((2000, 1200, 3900, 2900), fill=1)
    draw.ellipse((900, 800, 1500, 1200), fill=0)  # a hole
    started = time.perf_counter()
    ours = rle_encode(mask)
    seconds = time.perf_counter() - started
    assert seconds < 0.5, f"{seconds:.3f} s"
    assert ours == reference(np.array(mask))


# --- view parsing without a request -------------------------------------------------------------


def test_parse_view_reads_each_parameter() -> None:
    view = exports.parse_view(
        {"visible": "3, 1,3", "threshold": "0.25", "colours": "1:#FF0000", "opacity": "1.0"},
        [1, 2, 3],
    )
    assert view.visible == frozenset({1, 3})
    assert view.threshold == 0.25 and view.opacity == 1.0 and view.alpha == 255
    assert view.colours == {1: (255, 0, 0)}
    default = exports.parse_view({}, [1])
    assert default.visible is None and default.threshold == 0.0 and default.alpha == 128
    with pytest.raises(exports.BadView, match="no instance 2"):
        exports.parse_view({"visible": "2"}, [1])
    with pytest.raises(exports.BadView, match="longer than 4096"):
        exports.parse_view({}, [1], raw_length=5000)


def test_download_names_are_ascii_slugs() -> None:
    run = Run(input={"prompt": "Le chat noir, s'il vous plaît! " * 3})
    name = exports.download_name(run, "zip")
    assert name == f"le-chat-noir-sil-vous-plait-le-chat-noir-{run.pk.hex[:8]}.zip"
    assert exports.download_name(Run(input={"prompt": "猫"}), "png").startswith("points-and-boxes-")


# Keep a reference to IMAGES so a missing shared folder fails loudly here too.
assert (IMAGES / "coins.png").exists()
