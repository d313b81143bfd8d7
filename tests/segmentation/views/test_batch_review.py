"""Reviewing a batch: the grid (counts, sorts, the concept filter, no query per image), one
image with its instances, rejecting and undoing an instance or a whole image, and the overlay
that shows them (pixels, ETag)."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from PIL import Image

from segmentation.imaging.render import PALETTE
from segmentation.models import Batch, BatchItem, BatchRun, Mask, Rejection, Run, SourceImage
from segmentation.views.batch_review import FILL_ALPHA
from tests.factories import add_masks, colour_at, ellipse, make_run, png_bytes, stored_image

pytestmark = pytest.mark.django_db

HELMET, VEST = PALETTE[0], PALETTE[1]
# Boxes on cat.jpg (451×300), apart from each other: instance n's centre is its own.
BOXES = [(20, 20, 120, 120), (160, 30, 260, 130), (300, 150, 420, 280)]


def centre(box: tuple[int, int, int, int]) -> tuple[int, int]:
    return ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)


def run_on(
    owner: Any,
    image: SourceImage,
    scores: list[float],
    *,
    status: str = Run.Status.SUCCEEDED,
    boxes: list[tuple[int, int, int, int]] | None = None,
) -> Run:
    """A finished run on ``image`` with one ellipse mask per score."""
    run = make_run(owner, image=image, status=status, artifacts=Run.Artifacts.DONE)
    size = (image.width, image.height)
    shapes: list[tuple[Image.Image | None, tuple[int, int, int, int] | None]] = [
        (ellipse((b[0], b[1], b[2] - 1, b[3] - 1), size), b)
        for b in (boxes or BOXES)[: len(scores)]
    ]
    add_masks(run, shapes, score=lambda i: scores[i])
    return run


def new_batch(owner: Any, concepts: list[str] | None = None) -> Batch:
    return Batch.objects.create(
        owner=owner,
        name="Site photos",
        concepts=concepts or ["helmet", "vest"],
        options={},
        state=Batch.State.RUNNING,
    )


def new_item(batch: Batch, position: int, image: SourceImage, name: str = "") -> BatchItem:
    return BatchItem.objects.create(
        batch=batch,
        position=position,
        name=name or f"photo-{position}.jpg",
        image=image,
        state=BatchItem.State.ACCEPTED,
    )


@pytest.fixture
def cat() -> SourceImage:
    return stored_image("cat.jpg")


@pytest.fixture
def batch(owner: Any, cat: SourceImage) -> dict[str, Any]:
    """Three images of one batch:

    * a: helmet 2 instances (0.9, 0.8), vest 1 (0.95)
    * b: helmet 1 instance at 0.3 (the doubtful one), vest failed
    * c: helmet none, vest not made yet
    """
    b = new_batch(owner)
    a_item, b_item, c_item = (new_item(b, n, cat, f"{x}.jpg") for n, x in enumerate("abc"))
    runs = {
        "a_helmet": run_on(owner, cat, [0.9, 0.8]),
        "a_vest": run_on(owner, cat, [0.95], boxes=[BOXES[2]]),
        "b_helmet": run_on(owner, cat, [0.3]),
        "b_vest": make_run(owner, image=cat, status=Run.Status.FAILED),
        "c_helmet": run_on(owner, cat, []),
    }
    BatchRun.objects.bulk_create(
        [
            BatchRun(batch=b, item=a_item, concept="helmet", run=runs["a_helmet"]),
            BatchRun(batch=b, item=a_item, concept="vest", run=runs["a_vest"], reused=True),
            BatchRun(batch=b, item=b_item, concept="helmet", run=runs["b_helmet"]),
            BatchRun(batch=b, item=b_item, concept="vest", run=runs["b_vest"]),
            BatchRun(batch=b, item=c_item, concept="helmet", run=runs["c_helmet"]),
            BatchRun(batch=b, item=c_item, concept="vest", run=None),
        ]
    )
    return {"batch": b, "a": a_item, "b": b_item, "c": c_item, **runs}


def order(response: Any) -> list[int]:
    """The images of a grid page, in the order shown."""
    return [
        int(pk)
        for pk in re.findall(r'<li class="review-tile[^"]*" id="item-(\d+)"', html(response))
    ]


def html(response: Any) -> str:
    return response.content.decode()


def tile(response: Any, item: BatchItem) -> str:
    found = re.search(
        rf'id="item-{item.pk}">(.*?)</li>\s*(?:<li class="review-tile|</ul>\s*(?:<nav|</div>))',
        html(response),
        re.S,
    )
    assert found, f"no tile for {item.name}"
    return found.group(1)


def jpeg(response: Any) -> Image.Image:
    im = Image.open(io.BytesIO(response.content))
    im.load()
    return im.convert("RGB")


def near(a: tuple[int, ...], b: tuple[float, ...], tol: float = 14) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


# --- the grid ---------------------------------------------------------------------------------


def test_grid_shows_each_image_with_its_counts_per_concept(signed_in: Client, batch) -> None:
    b = batch["batch"]
    response = signed_in.get(f"/batches/{b.pk}/review/")
    assert response.status_code == 200
    assert order(response) == [batch["a"].pk, batch["b"].pk, batch["c"].pk]
    a = tile(response, batch["a"])
    assert "helmet: <strong>2</strong>" in a and "vest: <strong>1</strong>" in a
    assert "Lowest score <strong>0.80</strong>" in a
    b_tile = tile(response, batch["b"])
    assert (
        "helmet: <strong>1</strong>" in b_tile
        and 'vest: <span class="hint">failed</span>' in b_tile
    )
    c = tile(response, batch["c"])
    assert "helmet: <strong>0</strong>" in c and "not made yet" in c and "No instances" in c
    # The legend: each concept, its colour, its instances over the batch.
    assert 'style="background: rgb(31, 119, 180)"' in html(response)
    assert re.search(r"helmet <span class=\"count\">3</span>", html(response))
    assert re.search(r"vest <span class=\"count\">1</span>", html(response))
    # Each tile's picture is the overlay of its image.
    assert f'src="/batches/{b.pk}/items/{batch["a"].pk}/overlay.png"' in html(response)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("score", ["b", "a", "c"]),  # lowest score first: the doubtful image leads
        ("-instances", ["a", "b", "c"]),
        ("instances", ["c", "b", "a"]),
        ("position", ["a", "b", "c"]),
    ],
)
def test_grid_sorts(signed_in: Client, batch, sort: str, expected: list[str]) -> None:
    response = signed_in.get(f"/batches/{batch['batch'].pk}/review/", {"sort": sort})
    assert order(response) == [batch[x].pk for x in expected]


def test_concept_filter_keeps_images_with_that_concept_and_draws_it_alone(
    signed_in: Client, batch
) -> None:
    b = batch["batch"]
    response = signed_in.get(f"/batches/{b.pk}/review/", {"concept": "vest"})
    assert order(response) == [batch["a"].pk]
    assert f'/items/{batch["a"].pk}/overlay.png?concept=vest"' in html(response)
    assert "1 image with “vest”" in html(response)
    response = signed_in.get(f"/batches/{b.pk}/review/", {"concept": "helmet", "sort": "score"})
    assert order(response) == [batch["b"].pk, batch["a"].pk]


def test_unknown_concept_or_sort_is_said_and_ignored(signed_in: Client, batch) -> None:
    response = signed_in.get(
        f"/batches/{batch['batch'].pk}/review/",
        {"concept": "ladder", "sort": "colour", "page": "x"},
    )
    assert response.status_code == 200
    assert "This batch has no concept “ladder”" in html(response)
    assert "No such order “colour”" in html(response)
    assert order(response) == [batch[x].pk for x in "abc"]


def test_hide_rejected_images(signed_in: Client, batch) -> None:
    b = batch["batch"]
    BatchItem.objects.filter(pk=batch["b"].pk).update(rejected=True)
    response = signed_in.get(f"/batches/{b.pk}/review/")
    assert "Image rejected" in tile(response, batch["b"])
    response = signed_in.get(f"/batches/{b.pk}/review/", {"hide_rejected": "1"})
    assert order(response) == [batch["a"].pk, batch["c"].pk]


def test_grid_pages(signed_in: Client, owner, cat) -> None:
    b = new_batch(owner)
    items = [new_item(b, n, cat) for n in range(65)]
    response = signed_in.get(f"/batches/{b.pk}/review/")
    assert len(order(response)) == 60
    assert "Page 1 of 2" in html(response)
    assert 'href="?page=2"' in html(response)
    response = signed_in.get(f"/batches/{b.pk}/review/", {"page": "2"})
    assert len(order(response)) == 5
    # An image leads back to the page of the grid that shows it.
    page = html(signed_in.get(f"/batches/{b.pk}/items/{items[62].pk}/"))
    assert f'href="/batches/{b.pk}/review/?page=2#item-{items[62].pk}"' in page


def test_grid_queries_do_not_grow_with_the_images(signed_in: Client, owner, cat) -> None:
    def grid_of(count: int) -> int:
        b = new_batch(owner)
        for n in range(count):
            item = new_item(b, n, cat)
            helmet = run_on(owner, cat, [0.5 + n / 200, 0.4])
            vest = make_run(owner, image=cat, status=Run.Status.RUNNING)
            BatchRun.objects.create(batch=b, item=item, concept="helmet", run=helmet)
            BatchRun.objects.create(batch=b, item=item, concept="vest", run=vest)
            Rejection.objects.create(batch=b, mask=helmet.masks.get(index=0), by=owner)
        signed_in.get(f"/batches/{b.pk}/review/")  # the session, once
        with CaptureQueriesContext(connection) as queries:
            response = signed_in.get(f"/batches/{b.pk}/review/", {"sort": "score"})
        assert response.status_code == 200
        assert len(order(response)) == count
        return len(queries)

    few = grid_of(3)
    many = grid_of(50)
    assert many == few
    assert many <= 12


def test_grid_with_50_images_within_a_fixed_number_of_queries(
    signed_in: Client, owner, cat, django_assert_max_num_queries
) -> None:
    b = new_batch(owner)
    run = run_on(owner, cat, [0.7])
    for n in range(50):
        item = new_item(b, n, cat)
        BatchRun.objects.create(batch=b, item=item, concept="helmet", run=run)
    with django_assert_max_num_queries(12):
        response = signed_in.get(
            f"/batches/{b.pk}/review/", {"sort": "-instances", "concept": "helmet"}
        )
    assert len(order(response)) == 50


# --- one image --------------------------------------------------------------------------------


def test_item_page_lists_instances_by_concept_with_links_to_runs(signed_in: Client, batch) -> None:
    b, a = batch["batch"], batch["a"]
    response = signed_in.get(f"/batches/{b.pk}/items/{a.pk}/")
    assert response.status_code == 200
    page = html(response)
    for mask in Mask.objects.filter(run__in=[batch["a_helmet"], batch["a_vest"]]):
        assert f'id="mask-{mask.pk}"' in page
    assert f'href="/runs/{batch["a_helmet"].pk}/"' in page
    assert f"reused from run <code>{str(batch['a_vest'].pk)[:8]}</code>" in page
    assert f"/batches/{b.pk}/items/{a.pk}/overlay.png?size=display&amp;v=" in page
    assert "<strong>3</strong> instances kept" in page
    assert f'href="/batches/{b.pk}/items/{batch["b"].pk}/" rel="next"' in page or (
        f'rel="next" href="/batches/{b.pk}/items/{batch["b"].pk}/"' in page
    )
    assert "Image 1 of 3" in page


def test_previous_and_next_follow_the_grids_order(signed_in: Client, batch) -> None:
    b = batch["batch"]
    response = signed_in.get(f"/batches/{b.pk}/items/{batch['a'].pk}/", {"sort": "score"})
    page = html(response)
    assert "Image 2 of 3" in page
    assert f'rel="prev" href="/batches/{b.pk}/items/{batch["b"].pk}/?sort=score"' in page
    assert f'rel="next" href="/batches/{b.pk}/items/{batch["c"].pk}/?sort=score"' in page


def test_item_of_another_batch_is_404(signed_in: Client, batch, owner, cat) -> None:
    other = new_batch(owner)
    item = new_item(other, 0, cat)
    assert signed_in.get(f"/batches/{batch['batch'].pk}/items/{item.pk}/").status_code == 404
    refused = BatchItem.objects.create(
        batch=batch["batch"], position=9, name="x", state=BatchItem.State.REFUSED
    )
    assert signed_in.get(f"/batches/{batch['batch'].pk}/items/{refused.pk}/").status_code == 404


# --- rejecting --------------------------------------------------------------------------------


def test_reject_an_instance_and_undo_it(signed_in: Client, batch, owner) -> None:
    b, a = batch["batch"], batch["a"]
    mask = batch["a_helmet"].masks.get(index=0)
    url = f"/batches/{b.pk}/masks/{mask.pk}/reject/"
    response = signed_in.post(url, {"back": "sort=score&next=https://evil.example/"})
    assert response.status_code == 302
    # Back to the image, with only the grid's own parameters.
    assert response["Location"] == f"/batches/{b.pk}/items/{a.pk}/?sort=score#mask-{mask.pk}"
    rejection = Rejection.objects.get()
    assert (rejection.batch, rejection.mask, rejection.by) == (b, mask, owner)
    # Twice is once.
    signed_in.post(url)
    assert Rejection.objects.count() == 1

    page = html(signed_in.get(f"/batches/{b.pk}/items/{a.pk}/"))
    row = re.search(rf'<tr id="mask-{mask.pk}".*?</tr>', page, re.S)
    assert row and "Rejected" in row.group(0) and "by ada" in row.group(0)
    assert 'name="undo" value="1"' in row.group(0)
    assert "<strong>2</strong> instances kept, <strong>1</strong> rejected" in page
    grid = signed_in.get(f"/batches/{b.pk}/review/")
    a_tile = tile(grid, a)
    assert "helmet: <strong>1</strong>" in a_tile and "(1 rejected)" in a_tile
    assert "rejected by ada" in a_tile
    assert "Lowest score <strong>0.80</strong>" in a_tile  # the rejected one was 0.9

    signed_in.post(url, {"undo": "1"})
    assert not Rejection.objects.exists()
    assert signed_in.post(url, {"undo": "1"}).status_code == 302  # undoing nothing is fine
    assert not Rejection.objects.exists()


def test_rejecting_by_htmx_swaps_the_row_and_the_counts(signed_in: Client, batch) -> None:
    b = batch["batch"]
    mask = batch["a_helmet"].masks.get(index=1)
    response = signed_in.post(
        f"/batches/{b.pk}/masks/{mask.pk}/reject/", {"back": ""}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    body = html(response).strip()
    assert body.startswith(f'<tr id="mask-{mask.pk}" class="is-rejected">')
    assert 'id="item-overlay"' in body and 'hx-swap-oob="true"' in body
    assert re.search(r'id="concept-count-0"[^>]*hx-swap-oob="true">1</span>', body)
    assert "<strong>2</strong> instances kept, <strong>1</strong> rejected" in body


def test_teammate_may_reject_and_is_named(teammate_client: Client, teammate, batch) -> None:
    mask = batch["b_helmet"].masks.get()
    teammate_client.post(f"/batches/{batch['batch'].pk}/masks/{mask.pk}/reject/")
    assert Rejection.objects.get().by == teammate


def test_reject_a_mask_of_another_batch_is_404(signed_in: Client, batch, owner, cat) -> None:
    b = batch["batch"]
    other = new_batch(owner)
    foreign = run_on(owner, cat, [0.5])
    BatchRun.objects.create(
        batch=other, item=new_item(other, 0, cat), concept="helmet", run=foreign
    )
    loose = run_on(owner, cat, [0.5])  # in no batch at all
    for mask in (foreign.masks.get(), loose.masks.get()):
        assert signed_in.post(f"/batches/{b.pk}/masks/{mask.pk}/reject/").status_code == 404
    assert signed_in.post(f"/batches/{b.pk}/masks/999999/reject/").status_code == 404
    assert not Rejection.objects.exists()


def test_reject_is_post_only_and_needs_sign_in(signed_in: Client, stranger: Client, batch) -> None:
    b = batch["batch"]
    mask = batch["a_helmet"].masks.get(index=0)
    assert signed_in.get(f"/batches/{b.pk}/masks/{mask.pk}/reject/").status_code == 405
    assert signed_in.get(f"/batches/{b.pk}/items/{batch['a'].pk}/reject/").status_code == 405
    for url in (
        f"/batches/{b.pk}/masks/{mask.pk}/reject/",
        f"/batches/{b.pk}/items/{batch['a'].pk}/reject/",
    ):
        response = stranger.post(url)
        assert response.status_code == 302 and "/login" in response["Location"]
    for url in (f"/batches/{b.pk}/review/", f"/batches/{b.pk}/items/{batch['a'].pk}/overlay.png"):
        response = stranger.get(url)
        assert response.status_code == 302 and "/login" in response["Location"]
    assert not Rejection.objects.exists()


def test_reject_a_whole_image_and_undo_it(signed_in: Client, batch, owner) -> None:
    b, item = batch["batch"], batch["b"]
    url = f"/batches/{b.pk}/items/{item.pk}/reject/"
    response = signed_in.post(url)
    assert response.status_code == 302
    assert response["Location"] == f"/batches/{b.pk}/items/{item.pk}/#item-state"
    item.refresh_from_db()
    assert item.rejected and item.rejected_by == owner and item.rejected_at is not None
    first_at = item.rejected_at
    signed_in.post(url)
    item.refresh_from_db()
    assert item.rejected and item.rejected_at == first_at  # rejecting twice is once
    page = html(signed_in.get(f"/batches/{b.pk}/items/{item.pk}/"))
    assert "Image rejected" in page and "Undo: keep the image" in page
    assert f"by {owner.get_username()}" in page
    response = signed_in.post(url, {"undo": "1"}, HTTP_HX_REQUEST="true")
    assert html(response).strip().startswith('<section id="item-state"')
    assert "Reject the whole image" in html(response)
    item.refresh_from_db()
    assert not item.rejected and item.rejected_by is None


# --- the overlay ------------------------------------------------------------------------------


def test_overlay_fills_kept_instances_and_only_outlines_rejected_ones(
    signed_in: Client, batch
) -> None:
    b, a = batch["batch"], batch["a"]
    url = f"/batches/{b.pk}/items/{a.pk}/overlay.png"
    response = signed_in.get(url, {"size": "display"})
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"] == "private, no-cache"
    drawn = jpeg(response)
    assert drawn.size == (451, 300)  # cat.jpg is smaller than the display size
    # The photo alone where the helmets are: the overlay of the vest only.
    bare = jpeg(signed_in.get(url, {"size": "display", "concept": "vest"}))
    first, second = centre(BOXES[0]), centre(BOXES[1])
    alpha = FILL_ALPHA / 255
    for point in (first, second):
        under = colour_at(bare, point)
        expected = tuple(u * (1 - alpha) + c * alpha for u, c in zip(under, HELMET, strict=True))
        assert near(colour_at(drawn, point), expected), (point, colour_at(drawn, point), expected)
    vest = centre(BOXES[2])
    assert not near(
        colour_at(bare, vest), colour_at(bare, (vest[0], 5)), 0
    )  # drawn in the bare one

    mask = batch["a_helmet"].masks.get(index=0)
    signed_in.post(f"/batches/{b.pk}/masks/{mask.pk}/reject/")
    after = jpeg(signed_in.get(url, {"size": "display"}))
    # Rejected: the inside is the photo again; its edge is drawn in the concept's colour.
    assert near(colour_at(after, first), colour_at(bare, first), 8)
    assert near(colour_at(after, second), colour_at(drawn, second), 8)
    edge = (BOXES[0][0] + 1, centre(BOXES[0])[1])
    assert near(colour_at(after, edge), HELMET, 40), colour_at(after, edge)


def test_overlay_thumbnail_and_etag(signed_in: Client, batch) -> None:
    b, a = batch["batch"], batch["a"]
    url = f"/batches/{b.pk}/items/{a.pk}/overlay.png"
    response = signed_in.get(url)
    assert response.status_code == 200
    thumb = jpeg(response)
    assert max(thumb.size) <= 240 and thumb.size[0] > 200
    etag = response["ETag"]
    again = signed_in.get(url, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again["ETag"] == etag
    # The filter is part of what it shows, and so is a rejection.
    assert signed_in.get(url, {"concept": "vest"})["ETag"] != etag
    mask = batch["a_helmet"].masks.get(index=0)
    signed_in.post(f"/batches/{b.pk}/masks/{mask.pk}/reject/")
    changed = signed_in.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    signed_in.post(f"/batches/{b.pk}/masks/{mask.pk}/reject/", {"undo": "1"})
    assert signed_in.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_overlay_skips_masks_that_could_not_be_copied_or_read(
    signed_in: Client, owner, cat
) -> None:
    b = new_batch(owner, ["helmet"])
    item = new_item(b, 0, cat)
    run = make_run(owner, image=cat, artifacts=Run.Artifacts.PARTIAL)
    add_masks(run, [(None, BOXES[0]), (ellipse(BOXES[1]), BOXES[1])])
    broken = run.masks.get(index=1)
    broken.file.storage.delete(str(broken.file.name))  # gone from storage
    BatchRun.objects.create(batch=b, item=item, concept="helmet", run=run)
    response = signed_in.get(f"/batches/{b.pk}/items/{item.pk}/overlay.png", {"size": "display"})
    assert response.status_code == 200
    page = html(signed_in.get(f"/batches/{b.pk}/items/{item.pk}/"))
    assert "expired" in page  # the mask's reason is shown


def test_overlay_of_a_large_image_is_drawn_at_display_size(signed_in: Client, owner) -> None:
    """A 3000×2000 image: its masks are 3000×2000 too, and the overlay is drawn at the size the
    page shows (1600 wide), the mask scaled to it."""
    big = stored_image(data=png_bytes(3000, 2000, (250, 250, 250)))
    b = new_batch(owner, ["helmet"])
    item = new_item(b, 0, big)
    run = make_run(owner, image=big, artifacts=Run.Artifacts.DONE)
    box = (1500, 1000, 2500, 1800)
    add_masks(run, [(ellipse((box[0], box[1], box[2] - 1, box[3] - 1), (3000, 2000)), box)])
    BatchRun.objects.create(batch=b, item=item, concept="helmet", run=run)
    drawn = jpeg(signed_in.get(f"/batches/{b.pk}/items/{item.pk}/overlay.png", {"size": "display"}))
    assert drawn.width == 1600 and abs(drawn.height - 1067) <= 1  # Pillow's rounding
    alpha = FILL_ALPHA / 255
    filled = tuple(250 * (1 - alpha) + c * alpha for c in HELMET)
    assert near(colour_at(drawn, (1067, 747)), filled)  # the ellipse's centre, scaled
    assert near(colour_at(drawn, (300, 300)), (250, 250, 250), 6)  # outside it: the image
    thumb = jpeg(signed_in.get(f"/batches/{b.pk}/items/{item.pk}/overlay.png"))
    assert thumb.size == (240, 160)
    assert near(colour_at(thumb, (160, 112)), filled)
