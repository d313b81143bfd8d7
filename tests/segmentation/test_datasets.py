"""A batch's dataset downloads: COCO (checked with pycocotools, the reference implementation),
YOLO segmentation (polygons drawn back and compared with the masks), the ZIP of masks, and the
view's answers. Each test's batch is built row by row, and what it must export is written down
as it is built, not worked out by the code under test."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from django.test import Client
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from segmentation import datasets
from segmentation.models import Batch, BatchItem, BatchRun, Mask, Rejection, Run, SourceImage
from tests.factories import add_masks, ellipse, make_run, stored_image

pytestmark = [
    pytest.mark.django_db,
    # pycocotools 2.0.x with NumPy 2: harmless, and not ours.
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

CONCEPTS = ["cat", "ear"]


@dataclass
class World:
    """A batch and what its dataset must hold."""

    batch: Batch
    # The masks the dataset keeps at min_score 0, in the order it lists them.
    kept: list[Mask] = field(default_factory=list)
    # The images of the dataset: (position, SourceImage, concepts without an answer).
    images: list[tuple[int, SourceImage, list[str]]] = field(default_factory=list)
    rejected: Mask | None = None
    rejected_item: BatchItem | None = None
    two_parts: Mask | None = None


def blob(size: tuple[int, int], box: tuple[int, int, int, int]) -> tuple[Image.Image, Any]:
    x0, y0, x1, y1 = box
    return ellipse((x0, y0, x1 - 1, y1 - 1), size), box


def two_blobs(size: tuple[int, int]) -> tuple[Image.Image, Any]:
    """One instance in two separate parts."""
    im = ellipse((20, 30, 120, 130), size)
    ImageDraw.Draw(im).ellipse((250, 150, 350, 270), fill=255)
    return im, (20, 30, 351, 271)


def add_item(
    batch: Batch, position: int, name: str, *, state: str = "accepted", rejected: bool = False
) -> BatchItem:
    return BatchItem.objects.create(
        batch=batch,
        position=position,
        name=f"photos/{name}",
        image=stored_image(name),
        state=state,
        rejected=rejected,
    )


def image_of(item: BatchItem) -> SourceImage:
    assert item.image is not None
    return item.image


def answer(
    batch: Batch,
    item: BatchItem,
    concept: str,
    masks: list[Any],
    *,
    status: str = Run.Status.SUCCEEDED,
    scores: list[float | None] | None = None,
    reused: bool = False,
) -> list[Mask]:
    assert item.image is not None
    run = make_run(
        batch.owner,
        image=item.image,
        input={"prompt": concept},
        status=status,
        batch=None if reused else batch,
    )
    rows = add_masks(run, masks, score=(lambda i: scores[i]) if scores else None)
    BatchRun.objects.create(batch=batch, item=item, concept=concept, run=run, reused=reused)
    return rows


@pytest.fixture
def world(owner) -> World:
    batch = Batch.objects.create(
        owner=owner,
        name="Street scenes, 2026",
        concepts=CONCEPTS,
        options={"max_masks": 4},
        state=Batch.State.RUNNING,
    )
    w = World(batch)

    # cat.jpg (451×300): both concepts answered; "ear" by a run the team already had.
    a = add_item(batch, 0, "cat.jpg")
    size = (451, 300)
    cat = answer(batch, a, "cat", [blob(size, (20, 20, 120, 150)), blob(size, (200, 40, 300, 200))])
    ear = answer(
        batch,
        a,
        "ear",
        [blob(size, (60, 10, 110, 60)), blob(size, (300, 10, 350, 60)), (None, None)],
        reused=True,
    )
    w.rejected = ear[1]
    Rejection.objects.create(batch=batch, mask=ear[1], by=owner)
    w.kept += [cat[0], cat[1], ear[0]]  # ear[2] has no file
    w.images.append((0, image_of(a), []))

    # coins.png (384×303): one instance in two parts, one without a score; "ear" failed.
    b = add_item(batch, 1, "coins.png")
    size = (384, 303)
    cat = answer(
        batch, b, "cat", [two_blobs(size), blob(size, (150, 200, 220, 290))], scores=[0.95, None]
    )
    w.two_parts = cat[0]
    answer(batch, b, "ear", [blob(size, (5, 5, 60, 60))], status=Run.Status.FAILED)
    w.kept += cat
    w.images.append((1, image_of(b), ["ear"]))

    # A photo taken sideways (stored upright, 300×451); "ear" never ran.
    c = add_item(batch, 2, "cat-exif-rotated.jpg")
    assert c.image is not None and (c.image.width, c.image.height) == (300, 451)
    cat = answer(batch, c, "cat", [blob((300, 451), (40, 100, 260, 400))], scores=[0.5])
    BatchRun.objects.create(batch=batch, item=c, concept="ear", run=None)
    w.kept += cat
    w.images.append((2, image_of(c), ["ear"]))

    # Rejected in review, and refused at intake: nothing of them goes in.
    d = add_item(batch, 3, "rocket.jpg", rejected=True)
    answer(batch, d, "cat", [blob((640, 427), (10, 10, 200, 200))])
    w.rejected_item = d
    e = add_item(batch, 4, "horse.png", state="refused")
    answer(batch, e, "cat", [blob((400, 328), (10, 10, 200, 200))])
    return w


# --- helpers ------------------------------------------------------------------------------------


def body(response) -> bytes:
    assert response.streaming
    return b"".join(response.streaming_content)


def get(client: Client, batch: Batch, fmt: str, query: str = "", status: int = 200):
    url = f"/batches/{batch.pk}/export/{fmt}" + (f"?{query}" if query else "")
    response = client.get(url)
    assert response.status_code == status, (
        url,
        response.content[:300] if not response.streaming else "",
    )
    return response


def coco(client: Client, batch: Batch, query: str = "") -> dict[str, Any]:
    response = get(client, batch, "coco.json", query)
    assert response["Content-Type"] == "application/json; charset=utf-8"
    return json.loads(body(response))


def archive(client: Client, batch: Batch, fmt: str, query: str = "") -> zipfile.ZipFile:
    response = get(client, batch, fmt, query)
    assert response["Content-Type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(body(response)))
    assert zf.testzip() is None
    return zf


def stored(mask: Mask) -> np.ndarray:
    with mask.file.open("rb") as f, Image.open(f) as im:
        assert im.mode == "1"
        return np.array(im)


def key(mask: Mask) -> tuple[str, int]:
    return (str(mask.run_id), mask.number)


def file_name(position: int, name: str) -> str:
    return f"{position + 1:04d}-{name}"


NAMES = {
    0: file_name(0, "cat.jpg"),
    1: file_name(1, "coins.png"),
    2: file_name(2, "cat-exif-rotated.jpg"),
}


# --- COCO ---------------------------------------------------------------------------------------


def test_coco_loads_in_pycocotools_and_every_mask_is_exact(
    signed_in: Client, world: World, tmp_path: Path
) -> None:
    data = coco(signed_in, world.batch)
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    api = COCO(str(path))

    assert data["categories"] == [
        {"id": 1, "name": "cat", "supercategory": ""},
        {"id": 2, "name": "ear", "supercategory": ""},
    ]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in data["images"]] == [
        (pos + 1, NAMES[pos], image.width, image.height) for pos, image, _ in world.images
    ]
    assert [i["sam3web"]["unanswered"] for i in data["images"]] == [u for *_, u in world.images]
    assert data["info"]["sam3web"]["batch"] == world.batch.pk
    assert "Street scenes" in data["info"]["description"]

    anns = data["annotations"]
    assert [(a["sam3web"]["run"], a["sam3web"]["mask"]) for a in anns] == [
        key(m) for m in world.kept
    ]
    assert [a["id"] for a in anns] == list(range(1, len(world.kept) + 1))
    positions = {
        m.pk: pos for pos, image, _ in world.images for m in Mask.objects.filter(run__image=image)
    }
    for ann, mask in zip(anns, world.kept, strict=True):
        cell = BatchRun.objects.get(run_id=mask.run_id)
        assert ann["category_id"] == CONCEPTS.index(cell.concept) + 1
        assert ann["image_id"] == positions[mask.pk] + 1
        ours = stored(mask)
        h, w = ours.shape
        assert ann["segmentation"]["size"] == [h, w]
        assert np.array_equal(
            coco_mask.decode(api.annToRLE(api.anns[ann["id"]])).astype(bool), ours
        )
        # The reference implementation encodes our mask to the very same string.
        ref = coco_mask.encode(np.asfortranarray(ours.astype(np.uint8)))
        assert ref["counts"].decode() == ann["segmentation"]["counts"]
        assert ann["area"] == int(ours.sum()) == mask.area
        assert ann["bbox"] == [int(v) for v in coco_mask.toBbox(ann["segmentation"])]
        assert ann["iscrowd"] == 0
        assert ann.get("score") == mask.score
    # The instance without a score has none in the file (0 would rank it).
    assert sum("score" not in a for a in anns) == 1


def test_min_score_keeps_only_masks_at_or_above_it(signed_in: Client, world: World) -> None:
    scores = sorted({m.score for m in world.kept if m.score is not None})
    assert scores[0] < 0.85 < scores[-1]
    high = coco(signed_in, world.batch, "min_score=0.85")["annotations"]
    assert [(a["sam3web"]["run"], a["sam3web"]["mask"]) for a in high] == [
        key(m) for m in world.kept if m.score is not None and m.score >= 0.85
    ]
    assert sorted(a["score"] for a in high) == [0.9, 0.9, 0.95]
    # A score equal to min_score stays; a mask without a score goes once min_score is above 0.
    at = coco(signed_in, world.batch, "min_score=0.5")["annotations"]
    assert 0.5 in [a["score"] for a in at]
    assert all("score" in a for a in at)
    assert len(at) == len(world.kept) - 1
    # Images stay, with nothing found in them if need be.
    everything = coco(signed_in, world.batch, "min_score=1")
    assert everything["annotations"] == [] and len(everything["images"]) == 3


def test_rejections_and_rejected_items_are_left_out_until_undone(
    signed_in: Client, world: World
) -> None:
    assert world.rejected is not None and world.rejected_item is not None
    before = coco(signed_in, world.batch)
    keys = {(a["sam3web"]["run"], a["sam3web"]["mask"]) for a in before["annotations"]}
    assert key(world.rejected) not in keys
    assert NAMES[0] in {i["file_name"] for i in before["images"]}

    Rejection.objects.filter(batch=world.batch, mask=world.rejected).delete()
    BatchItem.objects.filter(pk=world.rejected_item.pk).update(rejected=False)
    after = coco(signed_in, world.batch)
    keys = {(a["sam3web"]["run"], a["sam3web"]["mask"]) for a in after["annotations"]}
    assert key(world.rejected) in keys
    assert file_name(3, "rocket.jpg") in {i["file_name"] for i in after["images"]}
    assert len(after["annotations"]) == len(before["annotations"]) + 2


def test_a_rejection_in_another_batch_does_not_count(signed_in: Client, world: World) -> None:
    other = Batch.objects.create(owner=world.batch.owner, concepts=CONCEPTS)
    Rejection.objects.create(batch=other, mask=world.kept[0])
    keys = [
        (a["sam3web"]["run"], a["sam3web"]["mask"])
        for a in coco(signed_in, world.batch)["annotations"]
    ]
    assert key(world.kept[0]) in keys


def test_a_mask_file_gone_or_broken_is_skipped(signed_in: Client, world: World) -> None:
    gone, broken = world.kept[1], world.kept[3]
    assert gone.file.name and broken.file.name
    gone.file.storage.delete(gone.file.name)
    Path(broken.file.path).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    anns = coco(signed_in, world.batch)["annotations"]
    assert [(a["sam3web"]["run"], a["sam3web"]["mask"]) for a in anns] == [
        key(m) for m in world.kept if m.pk not in (gone.pk, broken.pk)
    ]
    names = archive(signed_in, world.batch, "masks.zip").namelist()
    assert len(names) == len(world.kept) - 2 + 1


def test_a_batch_with_nothing_to_export_is_a_valid_empty_dataset(
    signed_in: Client, owner, tmp_path: Path
) -> None:
    batch = Batch.objects.create(owner=owner, name="", concepts=["dog"], state="running")
    item = add_item(batch, 0, "cat.jpg")
    answer(batch, item, "dog", [blob((451, 300), (1, 1, 50, 50))], status=Run.Status.FAILED)
    response = get(signed_in, batch, "coco.json")
    assert response["Content-Disposition"] == f'attachment; filename="batch-{batch.pk}.coco.json"'
    data = json.loads(body(response))
    path = tmp_path / "empty.json"
    path.write_text(json.dumps(data))
    api = COCO(str(path))
    assert api.getAnnIds() == [] and api.getImgIds() == [1]
    assert data["images"][0]["sam3web"]["unanswered"] == ["dog"]
    zf = archive(signed_in, batch, "yolo.zip")
    assert zf.read("labels/0001-cat.txt") == b""
    assert (
        json.loads(archive(signed_in, batch, "masks.zip").read("instances.json"))["instances"] == []
    )


# --- YOLO ---------------------------------------------------------------------------------------


def polygon_mask(line: str, size: tuple[int, int]) -> tuple[int, np.ndarray]:
    """A label line drawn back at the image's size."""
    fields = line.split()
    cls, coords = int(fields[0]), [float(v) for v in fields[1:]]
    assert len(coords) % 2 == 0 and len(coords) >= 6
    assert all(0.0 <= v <= 1.0 for v in coords)
    assert all(len(v.split(".")[1]) == 6 for v in fields[1:])
    w, h = size
    points = [(coords[i] * w, coords[i + 1] * h) for i in range(0, len(coords), 2)]
    im = Image.new("1", size, 0)
    ImageDraw.Draw(im).polygon(points, fill=1, outline=1)
    return cls, np.array(im)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_yolo_labels_draw_back_to_the_masks(signed_in: Client, world: World) -> None:
    zf = archive(signed_in, world.batch, "yolo.zip")
    assert sorted(zf.namelist()) == sorted(
        ["data.yaml", "classes.txt", *(f"labels/{n.rsplit('.', 1)[0]}.txt" for n in NAMES.values())]
    )
    expected: dict[int, list[Mask]] = {}
    for mask in world.kept:
        expected.setdefault(BatchRun.objects.get(run_id=mask.run_id).item.position, []).append(mask)
    for pos, image, _ in world.images:
        lines = zf.read(f"labels/{NAMES[pos].rsplit('.', 1)[0]}.txt").decode().splitlines()
        masks = expected.get(pos, [])
        assert len(lines) == len(masks)  # one line per instance, parts and all
        for line, mask in zip(lines, masks, strict=True):
            cls, drawn = polygon_mask(line, (image.width, image.height))
            concept = BatchRun.objects.get(run_id=mask.run_id).concept
            assert cls == CONCEPTS.index(concept)
            assert iou(drawn, stored(mask)) > 0.9, (pos, mask)
    # The instance in two parts is one line covering both.
    assert world.two_parts is not None
    line = zf.read(f"labels/{NAMES[1].rsplit('.', 1)[0]}.txt").decode().splitlines()[0]
    _, drawn = polygon_mask(line, (384, 303))
    ours = stored(world.two_parts)
    assert drawn[80, 70] and drawn[210, 300] and not drawn[80, 300]
    assert iou(drawn, ours) > 0.9


def test_yolo_data_yaml_and_classes(signed_in: Client, world: World) -> None:
    zf = archive(signed_in, world.batch, "yolo.zip")
    data = yaml.safe_load(zf.read("data.yaml"))
    assert data == {
        "path": ".",
        "train": "images",
        "val": "images",
        "nc": 2,
        "names": {0: "cat", 1: "ear"},
    }
    assert zf.read("classes.txt").decode().splitlines() == CONCEPTS
    assert zf.getinfo("data.yaml").compress_type == zipfile.ZIP_DEFLATED


def test_yolo_names_are_quoted_safely(owner) -> None:
    batch = Batch.objects.create(owner=owner, concepts=["yes", "a: b", "# c", "猫"])
    data = yaml.safe_load(datasets.data_yaml(batch))
    assert data["names"] == {0: "yes", 1: "a: b", 2: "# c", 3: "猫"} and data["nc"] == 4


def test_parts_are_merged_into_one_polygon_covering_each() -> None:
    mask = np.zeros((100, 200), np.uint8)
    mask[10:40, 10:50] = 1
    mask[60:90, 120:190] = 1
    mask[5:8, 150:160] = 1
    polygon = datasets.outline(mask)
    assert polygon is not None
    im = Image.new("1", (200, 100), 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in polygon.tolist()], fill=1, outline=1)
    drawn = np.array(im)
    assert iou(drawn, mask.astype(bool)) > 0.95
    # Only bridges are drawn outside the parts.
    assert (drawn & ~mask.astype(bool)).sum() < 200
    # A part too thin to be a polygon on its own is not a line.
    assert datasets.outline(np.zeros((10, 10), np.uint8)) is None
    line = np.zeros((10, 10), np.uint8)
    line[5, 5] = 1
    assert datasets.outline(line) is None


def test_the_closest_points_are_found_a_slice_at_a_time() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 5000, (1200, 2))
    b = rng.integers(0, 5000, (900, 2))  # slices of 277 rows of a: five of them
    i, j = datasets._closest(a, b)
    full = ((a[:, None, :].astype(float) - b[None, :, :]) ** 2).sum(-1)
    assert full[i, j] == full.min()


# --- ZIP of masks -------------------------------------------------------------------------------


def test_masks_zip_groups_the_stored_pngs_by_image(signed_in: Client, world: World) -> None:
    zf = archive(signed_in, world.batch, "masks.zip")
    names = []
    for mask in world.kept:
        cell = BatchRun.objects.select_related("item").get(run_id=mask.run_id)
        names.append(
            f"{NAMES[cell.item.position].rsplit('.', 1)[0]}/{cell.concept}-{mask.number}.png"
        )
    assert zf.namelist() == [*names, "instances.json"]
    for name, mask in zip(names, world.kept, strict=True):
        with mask.file.open("rb") as f:
            assert zf.read(name) == f.read()
        assert zf.getinfo(name).compress_type == zipfile.ZIP_STORED
    described = json.loads(zf.read("instances.json"))
    assert [r["file"] for r in described["instances"]] == names
    assert [(r["run"], r["mask"]) for r in described["instances"]] == [key(m) for m in world.kept]
    for row, mask in zip(described["instances"], world.kept, strict=True):
        assert row["score"] == mask.score and mask.box is not None
        x0, y0, x1, y1 = mask.box
        assert row["bbox"] == [x0, y0, x1 - x0, y1 - y0]
        assert row["area"] == mask.area
    assert [i["file_name"] for i in described["images"]] == list(NAMES.values())
    assert [i["unanswered"] for i in described["images"]] == [u for *_, u in world.images]
    assert zf.getinfo("instances.json").compress_type == zipfile.ZIP_DEFLATED


def test_concept_slugs_never_collide(owner) -> None:
    batch = Batch.objects.create(
        owner=owner, concepts=["cat-3", "cat", "Cat!", "猫", "red car", "concept 4", "🐈"]
    )
    slugs = datasets.concept_slugs(batch)
    assert slugs == {
        "cat-3": "cat-3",
        "cat": "cat",
        "Cat!": "cat-4",
        "猫": "concept-4",
        "red car": "red-car",
        "concept 4": "concept-4-6",
        "🐈": "concept-7",
    }
    assert len(set(slugs.values())) == len(slugs)


def test_a_zip_of_many_entries_keeps_none_of_them_in_memory() -> None:
    count = 10_000
    zipper = datasets.StreamingZip()
    tracemalloc.start()
    try:
        out = bytearray()
        for n in range(count):
            for chunk in zipper.add_bytes(f"image-{n:05d}/cat-{n}.png", b"%d" % n, compress=False):
                out += chunk
        for chunk in zipper.close():
            out += chunk
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The output built here (1.4 MB) aside, a few hundred KB: not some 400 bytes an entry.
    assert peak - len(out) < 1_000_000, peak - len(out)
    zf = zipfile.ZipFile(io.BytesIO(bytes(out)))
    assert zf.testzip() is None
    assert len(zf.namelist()) == count
    assert zf.read("image-01234/cat-1234.png") == b"1234"


# --- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["coco.zip", "yolo.zip", "masks.zip"])
def test_images_go_in_byte_for_byte_when_asked(signed_in: Client, world: World, fmt: str) -> None:
    without = archive(signed_in, world.batch, fmt)
    assert not [n for n in without.namelist() if n.startswith("images/")]
    zf = archive(signed_in, world.batch, fmt, "images=1")
    for pos, image, _ in world.images:
        name = f"images/{NAMES[pos]}"
        with image.file.open("rb") as f:
            assert zf.read(name) == f.read()
        assert zf.getinfo(name).compress_type == zipfile.ZIP_STORED
    assert len([n for n in zf.namelist() if n.startswith("images/")]) == 3


def test_coco_zip_holds_the_same_annotations(signed_in: Client, world: World) -> None:
    zf = archive(signed_in, world.batch, "coco.zip", "images=1&min_score=0.6")
    data = json.loads(zf.read("annotations.json"))
    plain = coco(signed_in, world.batch, "min_score=0.6")
    for part in ("images", "categories", "annotations"):
        assert data[part] == plain[part]
    assert len(data["annotations"]) == 4


def test_the_image_file_name_is_safe_and_keeps_the_stored_extension(owner) -> None:
    batch = Batch.objects.create(owner=owner, concepts=["x"])
    image = stored_image("rocket.webp")
    item = BatchItem(
        batch=batch, position=41, name="../../Été 2026/Rocket launch!.WEBP?x=1", image=image
    )
    assert datasets.image_file_name(item) == "0042-rocket-launch.webp"
    item.name = "https://example.com/"
    assert datasets.image_file_name(item) == f"0042-{image.sha256[:12]}.webp"


# --- the view -----------------------------------------------------------------------------------


def test_every_format_downloads_with_its_name_and_type(signed_in: Client, world: World) -> None:
    for fmt, kind in [
        ("coco.json", "application/json; charset=utf-8"),
        ("coco.zip", "application/zip"),
        ("yolo.zip", "application/zip"),
        ("masks.zip", "application/zip"),
    ]:
        response = get(signed_in, world.batch, fmt)
        assert response["Content-Type"] == kind
        assert response["Content-Disposition"] == f'attachment; filename="street-scenes-2026.{fmt}"'
        assert response["Cache-Control"] == "private, no-cache"
        assert len(body(response)) > 0


def test_a_teammate_may_export(teammate_client: Client, world: World) -> None:
    assert len(coco(teammate_client, world.batch)["annotations"]) == len(world.kept)


@pytest.mark.parametrize("value", ["abc", "2", "-1", "nan", "inf", "1e5", "0_5", "0.5x", "0x1"])
def test_a_bad_min_score_is_a_400_saying_why(signed_in: Client, world: World, value: str) -> None:
    response = get(signed_in, world.batch, "coco.json", f"min_score={value}", status=400)
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert b"min_score is a number from 0 to 1" in response.content


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("images=yes", b"images is 1"),
        ("min_score=0.5&min_score=0.6", b"given 2 times"),
        ("threshold=0.5", b"Unknown parameter 'threshold'"),
    ],
)
def test_other_bad_queries_are_a_400(
    signed_in: Client, world: World, query: str, says: bytes
) -> None:
    response = get(signed_in, world.batch, "yolo.zip", query, status=400)
    assert says in response.content


def test_coco_json_with_images_is_the_coco_zip(signed_in: Client, world: World) -> None:
    response = get(signed_in, world.batch, "coco.json", "images=1&min_score=")
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="street-scenes-2026.coco.zip"'
    zf = zipfile.ZipFile(io.BytesIO(body(response)))
    assert len(json.loads(zf.read("annotations.json"))["annotations"]) == len(world.kept)
    assert f"images/{NAMES[0]}" in zf.namelist()


@pytest.mark.parametrize(("value", "kept"), [("", 6), ("0", 6), ("5e-1", 5), (".85", 3), ("1", 0)])
def test_min_score_as_a_number_field_sends_it(
    signed_in: Client, world: World, value: str, kept: int
) -> None:
    assert len(world.kept) == 6
    assert len(coco(signed_in, world.batch, f"min_score={value}")["annotations"]) == kept


def test_an_unknown_format_or_batch_is_a_404(signed_in: Client, world: World) -> None:
    response = get(signed_in, world.batch, "voc.xml", status=404)
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    for fmt in datasets.FORMATS:
        assert fmt.encode() in response.content
    missing = Batch(pk=world.batch.pk + 1000)
    assert b"no batch" in get(signed_in, missing, "coco.json", status=404).content


def test_only_get(signed_in: Client, world: World) -> None:
    assert signed_in.post(f"/batches/{world.batch.pk}/export/coco.json").status_code == 405


def test_a_stranger_is_sent_to_sign_in(stranger: Client, world: World) -> None:
    url = f"/batches/{world.batch.pk}/export/coco.json"
    response = stranger.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_an_older_8_bit_mask_is_exported_as_1_bit(signed_in: Client, owner) -> None:
    batch = Batch.objects.create(owner=owner, name="old", concepts=["cat"], state="running")
    item = add_item(batch, 0, "cat.jpg")
    im, box = blob((451, 300), (30, 40, 200, 220))
    [mask] = answer(batch, item, "cat", [(im.convert("L"), box)])
    with mask.file.open("rb") as f, Image.open(f) as stored_im:
        assert stored_im.mode == "L"
        pixels = np.array(stored_im) > 127
    png = archive(signed_in, batch, "masks.zip").read("0001-cat/cat-1.png")
    with Image.open(io.BytesIO(png)) as out:
        assert out.mode == "1" and out.size == (451, 300)
        assert np.array_equal(np.array(out), pixels)
    [ann] = coco(signed_in, batch)["annotations"]
    assert np.array_equal(coco_mask.decode(ann["segmentation"]).astype(bool), pixels)
