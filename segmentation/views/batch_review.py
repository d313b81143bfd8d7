"""Reviewing a batch's results: a grid of its images with their instances coloured by concept,
one image at a time with its instances, and rejections (an instance that is a false positive,
or a whole image), which are kept, shown, undoable, and left out of the batch's dataset.

A rejected instance is a Rejection(batch, mask) row; a rejected image is BatchItem.rejected.
The dataset export reads exactly those two, so nothing else here marks anything rejected.

The grid must stay fast for a thousand images: every count it shows comes from a fixed number
of queries per page (the items with their counts, then their cells), never one per image.

The overlays are drawn here, at the size they are shown, reading one mask at a time (a 50 MP
image's masks are 50 MP each), and revalidated by an ETag of what they show."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, F, Min, OuterRef, Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
    HttpResponseRedirect,
    QueryDict,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRefresh
from PIL import Image, ImageChops, ImageFilter

from segmentation.batches import accepted_items
from segmentation.imaging.display import fit
from segmentation.imaging.masks import NEAREST, ArtifactError, binarize, open_untrusted
from segmentation.imaging.render import THUMBNAIL_SIZE, colour_for, fit_image
from segmentation.imaging.store import display_file, read_file
from segmentation.models import Batch, BatchItem, BatchRun, Mask, Rejection, Run
from segmentation.views._common import HtmxHttpRequest

logger = logging.getLogger(__name__)

PAGE_SIZE = 60
SORTS = {
    "position": "Image order",
    "score": "Lowest score first",
    "-instances": "Most instances first",
    "instances": "Fewest instances first",
}
# The item page's overlay: the long side at most this (the page shows it at most ~900 px wide;
# a screen at twice the density still gets its pixels).
DISPLAY_LONG_SIDE = 1600
# Kept instances are filled at this opacity; rejected ones only outlined (opaque).
FILL_ALPHA = 115
JPEG_QUALITY = {"thumb": 80, "display": 85}
OUTLINE = {"thumb": 3, "display": 7}  # erosion window: a 1 px / 3 px ring inside the edge
# Part of every overlay's version: bump it when the drawing changes, so browsers fetch anew.
DRAWING = "1"
OVERLAY_CACHE_SECONDS = 24 * 3600


# --- what the grid asked for ------------------------------------------------------------------


@dataclass(frozen=True)
class GridQuery:
    concept: str = ""  # "": every concept
    sort: str = "position"
    hide_rejected: bool = False
    page: str = ""
    notes: tuple[str, ...] = ()  # what was asked for and could not be used, for the person

    @property
    def sort_label(self) -> str:
        return SORTS[self.sort].lower()

    def params(self, *, page: bool = True) -> str:
        """The query string that asks for this again ("" for the defaults)."""
        pairs = []
        if self.concept:
            pairs.append(("concept", self.concept))
        if self.sort != "position":
            pairs.append(("sort", self.sort))
        if self.hide_rejected:
            pairs.append(("hide_rejected", "1"))
        if page and self.page and self.page != "1":
            pairs.append(("page", self.page))
        return urlencode(pairs)


def grid_query(batch: Batch, data: QueryDict) -> GridQuery:
    """The grid's filter and sort from a query string; what cannot be used is left out and
    said (an unknown concept or sort), never an error."""
    notes = []
    concept = data.get("concept", "")
    if concept and concept not in batch.concepts:
        notes.append(f"This batch has no concept “{concept[:100]}”: showing every concept.")
        concept = ""
    sort = data.get("sort", "") or "position"
    if sort not in SORTS:
        notes.append(f"No such order “{sort[:40]}”: showing the images in their order.")
        sort = "position"
    page = data.get("page", "")
    return GridQuery(
        concept=concept,
        sort=sort,
        hide_rejected=data.get("hide_rejected") == "1",
        page=page if page.isdigit() else "",
        notes=tuple(notes),
    )


def _rejected(batch: Batch, run: str) -> Q:
    """The masks reached through ``run`` (a path to a Run) that are rejected in this batch."""
    return Q(Exists(Rejection.objects.filter(batch=batch, mask=OuterRef(f"{run}__masks"))))


def _kept(batch: Batch, run: str) -> Q:
    """The masks reached through ``run`` that count: of a succeeded run, and not rejected."""
    return Q(**{f"{run}__status": Run.Status.SUCCEEDED}) & ~_rejected(batch, run)


# Counts are conditional aggregates over joins from the batch's own rows (items, cells), never
# subqueries per image: the planner then walks from the batch's indexes whatever its statistics
# say (a correlated subquery can be planned from the whole Run table outwards).


def grid_items(batch: Batch, query: GridQuery) -> QuerySet[BatchItem]:
    """The batch's accepted images, filtered and sorted as asked, each annotated with its kept
    instances (of the chosen concept only, when one is) and their lowest score."""
    kept = _kept(batch, "cells__run")
    if query.concept:
        kept &= Q(cells__concept=query.concept)
    items = accepted_items(batch).annotate(
        instances=Count("cells__run__masks", filter=kept),
        lowest=Min("cells__run__masks__score", filter=kept),
    )
    if query.concept:
        items = items.filter(instances__gt=0)
    if query.hide_rejected:
        items = items.filter(rejected=False)
    orders: dict[str, list[Any]] = {
        "position": ["position"],
        "score": [F("lowest").asc(nulls_last=True), "position"],
        "-instances": ["-instances", "position"],
        "instances": ["instances", "position"],
    }
    return items.order_by(*orders[query.sort])


# --- what a tile and the item page show -------------------------------------------------------


def _colour(batch: Batch, concept: str) -> tuple[int, int, int]:
    index = batch.concepts.index(concept) if concept in batch.concepts else len(batch.concepts)
    return colour_for(index)


def _css(rgb: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*rgb)


@dataclass
class Cell:
    """One image × concept as the grid shows it."""

    concept: str
    colour: str
    status: str  # "" when its run succeeded; else what it is doing, for people
    kept: int = 0
    rejected: int = 0
    lowest: float | None = None


@dataclass
class Tile:
    item: BatchItem
    cells: list[Cell]
    rejected_by: list[str] = field(default_factory=list)


def _status_text(status: str | None) -> str:
    if status is None:
        return "not made yet"
    if status == Run.Status.SUCCEEDED:
        return ""
    return str(Run.Status(status).label).lower() if status in Run.Status.values else status


def tiles(batch: Batch, items: list[BatchItem]) -> list[Tile]:
    """The page's tiles: every concept's counts for each image, in two queries in all."""
    ids = [item.pk for item in items]
    counted = _kept(batch, "run")
    rows = (
        BatchRun.objects.filter(batch=batch, item_id__in=ids)
        .order_by()
        .values("item_id", "concept", "run_id", "run__status")
        .annotate(
            kept=Count("run__masks", filter=counted),
            rejected=Count("run__masks", filter=_rejected(batch, "run")),
            lowest=Min("run__masks__score", filter=counted),
        )
    )
    by_item: dict[int, dict[str, dict[str, Any]]] = {}
    run_item: dict[Any, int] = {}
    for row in rows:
        by_item.setdefault(row["item_id"], {})[row["concept"]] = dict(row)
        if row["rejected"]:
            run_item[row["run_id"]] = row["item_id"]
    who: dict[int, set[str]] = {}
    if run_item:
        rejecters = (
            Rejection.objects.filter(batch=batch, mask__run_id__in=list(run_item))
            .values_list("mask__run_id", "by__username")
            .distinct()
        )
        for run_id, username in rejecters:
            who.setdefault(run_item[run_id], set()).add(username or "a former teammate")
    out = []
    for item in items:
        found = by_item.get(item.pk, {})
        cells = []
        for concept in batch.concepts:
            cell = found.get(concept)
            colour = _css(_colour(batch, concept))
            if cell is None or cell["run_id"] is None:
                cells.append(Cell(concept, colour, "not made yet"))
                continue
            status = _status_text(cell["run__status"])
            kept, lowest = (0, None) if status else (cell["kept"], cell["lowest"])
            cells.append(Cell(concept, colour, status, kept, cell["rejected"], lowest))
        out.append(Tile(item, cells, sorted(who.get(item.pk, ()))))
    return out


def legend(batch: Batch) -> list[dict[str, Any]]:
    """Each concept with its colour and its kept instances over the whole batch (one query)."""
    # Cells are made for accepted images only (segmentation.batches.start_batch).
    totals = dict(
        BatchRun.objects.filter(batch=batch)
        .order_by()
        .values("concept")
        .annotate(n=Count("run__masks", filter=_kept(batch, "run")))
        .values_list("concept", "n")
    )
    return [
        {"concept": c, "colour": _css(colour_for(i)), "instances": totals.get(c, 0)}
        for i, c in enumerate(batch.concepts)
    ]


def _thumb_size(width: int, height: int) -> tuple[int, int]:
    tw, th = THUMBNAIL_SIZE
    scale = min(tw / width, th / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _display_size(width: int, height: int) -> tuple[int, int]:
    if max(width, height) <= DISPLAY_LONG_SIDE:
        return width, height
    return fit(width, height, DISPLAY_LONG_SIDE)


# --- pages ------------------------------------------------------------------------------------


def _batch_or_404(batch_id: int) -> Batch:
    return get_object_or_404(Batch, pk=batch_id)


def _item_or_404(batch: Batch, item_id: int) -> BatchItem:
    return get_object_or_404(accepted_items(batch).select_related("image"), pk=item_id)


@require_GET
def batch_review(request: HtmxHttpRequest, batch_id: int) -> HttpResponse:
    batch = _batch_or_404(batch_id)
    query = grid_query(batch, request.GET)
    page: Page[BatchItem] = Paginator(
        grid_items(batch, query).select_related("image"), PAGE_SIZE
    ).get_page(query.page or 1)
    items = list(page.object_list)
    shown = [
        (tile, _thumb_size(tile.item.image.width, tile.item.image.height))
        if tile.item.image
        else (tile, THUMBNAIL_SIZE)
        for tile in tiles(batch, items)
    ]
    context = {
        "batch": batch,
        "query": query,
        "filters": query.params(page=False),
        "sorts": SORTS,
        "page": page,
        "tiles": shown,
        "legend": [
            {**entry, "params": replace(query, concept=entry["concept"], page="").params()}
            for entry in legend(batch)
        ],
        "total": accepted_items(batch).count(),
    }
    template = "segmentation/batches/review.html"
    if request.htmx and request.htmx.target == "review-results":
        template += "#results"
    return render(request, template, context)


@dataclass
class Instance:
    mask: Mask
    concept: str
    colour: str
    rejection: Rejection | None
    area_pct: str | None

    @property
    def rejected(self) -> bool:
        return self.rejection is not None


@dataclass
class Group:
    """One concept of the image: its cell (and run), and its instances."""

    index: int
    concept: str
    colour: str
    cell: BatchRun | None
    instances: list[Instance]

    @property
    def kept(self) -> int:
        return sum(1 for i in self.instances if not i.rejected)

    @property
    def rejected(self) -> int:
        return sum(1 for i in self.instances if i.rejected)

    @property
    def status(self) -> str:
        if self.cell is None or self.cell.run is None:
            return "not made yet"
        return _status_text(self.cell.run.status)


def _neighbours(batch: Batch, item: BatchItem, query: GridQuery) -> dict[str, Any]:
    """The previous and next image in the grid's order (with its filters), or in the batch's
    order when this image is not among them (hidden as rejected, say); and the grid's page
    that shows it."""
    order = list(grid_items(batch, query).values_list("pk", flat=True))
    grid = query
    if item.pk not in order:
        order = list(accepted_items(batch).values_list("pk", flat=True))
        grid = GridQuery()
    at = order.index(item.pk)
    on_page = replace(grid, page=str(at // PAGE_SIZE + 1))
    return {
        "previous_id": order[at - 1] if at > 0 else None,
        "next_id": order[at + 1] if at + 1 < len(order) else None,
        "number": at + 1,
        "of": len(order),
        "grid_params": on_page.params(),
    }


def item_context(
    batch: Batch, item: BatchItem, query: GridQuery, *, neighbours: bool = True
) -> dict[str, Any]:
    image = item.image
    assert image is not None  # accepted items have their image
    cells = {c.concept: c for c in item.cells.select_related("run")}
    succeeded = [c.run.pk for c in cells.values() if c.run and c.run.status == Run.Status.SUCCEEDED]
    masks = list(Mask.objects.filter(run_id__in=succeeded).order_by("run_id", "index"))
    rejections = {
        r.mask_id: r
        for r in Rejection.objects.filter(batch=batch, mask__in=masks).select_related("by")
    }
    by_run: dict[Any, list[Mask]] = {}
    for mask in masks:
        by_run.setdefault(mask.run_id, []).append(mask)
    area = image.width * image.height
    groups = []
    for index, concept in enumerate(batch.concepts):
        cell = cells.get(concept)
        colour = _css(colour_for(index))
        found = by_run.get(cell.run_id, []) if cell is not None else []
        instances = [
            Instance(
                m,
                concept,
                colour,
                rejections.get(m.pk),
                f"{100 * m.area / area:.1f}" if m.area is not None else None,
            )
            for m in found
        ]
        groups.append(Group(index, concept, colour, cell, instances))
    marks = [_Mark(i.mask, g.index, i.rejected) for g in groups for i in g.instances if i.mask.file]
    version = overlay_version(item, marks, "display", "")
    display_w, display_h = _display_size(image.width, image.height)
    return {
        "batch": batch,
        "item": item,
        "image": image,
        "groups": groups,
        "kept": sum(g.kept for g in groups),
        "rejected": sum(g.rejected for g in groups),
        "overlay_version": version,
        "display_width": display_w,
        "display_height": display_h,
        "query": query,
        "params": query.params(page=False),
        **(_neighbours(batch, item, query) if neighbours else {}),
    }


@require_GET
def batch_item(request: HttpRequest, batch_id: int, item_id: int) -> HttpResponse:
    batch = _batch_or_404(batch_id)
    item = _item_or_404(batch, item_id)
    query = grid_query(batch, request.GET)
    return render(request, "segmentation/batches/item.html", item_context(batch, item, query))


# --- rejecting and undoing --------------------------------------------------------------------


def _back(batch: Batch, item: BatchItem, request: HttpRequest, anchor: str) -> str:
    """The item page, with the grid's filters the form came with (only those: never a URL
    from the request)."""
    query = grid_query(batch, QueryDict(request.POST.get("back", "")))
    params = query.params()
    url = reverse("batch_item", args=[batch.pk, item.pk])
    return f"{url}{'?' + params if params else ''}#{anchor}"


@require_POST
def batch_mask_reject(request: HtmxHttpRequest, batch_id: int, mask_id: int) -> HttpResponse:
    """Reject an instance as a false positive, or (``undo=1``) take that back. Either is
    idempotent: one Rejection at most, and undoing nothing changes nothing."""
    batch = _batch_or_404(batch_id)
    mask = get_object_or_404(Mask, pk=mask_id)
    # The mask must be one of this batch's: its run answers one of the batch's accepted cells.
    cell = (
        BatchRun.objects.filter(
            batch=batch, run_id=mask.run_id, item__state=BatchItem.State.ACCEPTED
        )
        .select_related("item__image")
        .first()
    )
    if cell is None:
        raise Http404("No such instance in this batch.")
    item = cell.item
    undo = request.POST.get("undo") == "1"
    if undo:
        Rejection.objects.filter(batch=batch, mask=mask).delete()
    else:
        assert request.user.is_authenticated  # LoginRequiredMiddleware: nobody else gets here
        Rejection.objects.get_or_create(batch=batch, mask=mask, defaults={"by": request.user})
    if request.htmx:
        query = grid_query(batch, QueryDict(request.POST.get("back", "")))
        context = item_context(batch, item, query, neighbours=False)
        for group in context["groups"]:
            for instance in group.instances:
                if instance.mask.pk == mask.pk:
                    context.update(group=group, instance=instance)
        if "instance" not in context:  # its run is no longer one that shows masks
            return HttpResponseClientRefresh()
        return render(request, "segmentation/batches/item.html#mask_swap", context)
    what = f"Instance {mask.number} of “{cell.concept}”"
    if undo:
        messages.success(request, f"{what} is kept again.")
    else:
        messages.success(request, f"{what} was rejected: it is left out of the dataset.")
    return HttpResponseRedirect(_back(batch, item, request, f"mask-{mask.pk}"))


@require_POST
def batch_item_reject(request: HtmxHttpRequest, batch_id: int, item_id: int) -> HttpResponse:
    """Reject a whole image (left out of the dataset), or (``undo=1``) take it back."""
    batch = _batch_or_404(batch_id)
    item = _item_or_404(batch, item_id)
    undo = request.POST.get("undo") == "1"
    if undo:
        BatchItem.objects.filter(pk=item.pk).update(
            rejected=False, rejected_by=None, rejected_at=None
        )
    else:
        BatchItem.objects.filter(pk=item.pk, rejected=False).update(
            rejected=True, rejected_by=request.user, rejected_at=timezone.now()
        )
    item.refresh_from_db(fields=["rejected", "rejected_by", "rejected_at"])
    if request.htmx:
        query = grid_query(batch, QueryDict(request.POST.get("back", "")))
        return render(
            request,
            "segmentation/batches/item.html#item_state",
            item_context(batch, item, query, neighbours=False),
        )
    if undo:
        messages.success(request, "The image is back in the dataset.")
    else:
        messages.success(request, "The image was rejected: it is left out of the dataset.")
    return HttpResponseRedirect(_back(batch, item, request, "item-state"))


# --- the overlay ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mark:
    mask: Mask
    concept_index: int
    rejected: bool


def overlay_marks(batch: Batch, item: BatchItem, concept: str) -> list[_Mark]:
    """The instances the overlay draws (of one concept, when given), in two queries."""
    cells = BatchRun.objects.filter(item=item, run__status=Run.Status.SUCCEEDED)
    if concept:
        cells = cells.filter(concept=concept)
    index = {
        run_id: batch.concepts.index(c) if c in batch.concepts else len(batch.concepts)
        for run_id, c in cells.values_list("run_id", "concept")
    }
    masks = (
        Mask.objects.filter(run_id__in=list(index))
        .exclude(file="")
        .annotate(is_rejected=Exists(Rejection.objects.filter(batch=batch, mask=OuterRef("pk"))))
        .order_by("run_id", "index")
    )
    marks = [_Mark(m, index[m.run_id], m.is_rejected) for m in masks]
    return sorted(marks, key=lambda m: (m.concept_index, m.mask.index))


def overlay_version(item: BatchItem, marks: list[_Mark], size: str, concept: str) -> str:
    """Changes whenever the overlay would look different: the image, the masks (a retried copy
    has a new file), which are rejected, the size and the concept shown."""
    parts: list[Any] = [DRAWING, size, concept, item.image_id]
    for m in marks:
        copied = m.mask.copied_at.isoformat() if m.mask.copied_at else ""
        parts.append((m.mask.pk, m.mask.file.name, copied, m.concept_index, m.rejected))
    return hashlib.blake2s(repr(parts).encode(), digest_size=12).hexdigest()


@require_GET
def batch_item_overlay(request: HttpRequest, batch_id: int, item_id: int) -> HttpResponse:
    """The image with its kept instances filled in their concept's colour and the rejected
    ones outlined, as a JPEG: thumbnail size, or ``size=display`` for the item page;
    ``concept=`` draws that concept only (an unknown one is ignored)."""
    batch = _batch_or_404(batch_id)
    item = _item_or_404(batch, item_id)
    size = "display" if request.GET.get("size") == "display" else "thumb"
    concept = request.GET.get("concept", "")
    if concept not in batch.concepts:
        concept = ""
    marks = overlay_marks(batch, item, concept)
    version = overlay_version(item, marks, size, concept)
    etag = f'"{version}"'
    if etag in request.headers.get("If-None-Match", ""):
        response: HttpResponse = HttpResponseNotModified()
    else:
        key = f"sam3web:batch-overlay:{item.pk}:{version}"
        data = cache.get(key)
        if data is None:
            data = render_overlay_image(item, marks, size)
            cache.set(key, data, OVERLAY_CACHE_SECONDS)
        response = HttpResponse(data, content_type="image/jpeg")
        response["Content-Security-Policy"] = "default-src 'none'"
    response["ETag"] = etag
    # Rejections change what it shows: the browser keeps it, and asks (cheaply) each time.
    response["Cache-Control"] = "private, no-cache"
    return response


def render_overlay_image(item: BatchItem, marks: list[_Mark], size: str) -> bytes:
    """The JPEG: the image at the size shown, kept instances filled, rejected ones outlined.
    Masks are read one at a time and scaled down at once, so memory holds the small canvas
    and one full-size mask."""
    image = item.image
    assert image is not None
    if size == "thumb":
        box = THUMBNAIL_SIZE
        source = image.thumbnail if image.thumbnail else display_file(image)[0]
    else:
        box = (DISPLAY_LONG_SIDE, DISPLAY_LONG_SIDE)
        source = display_file(image)[0]
    try:
        with source.open("rb") as f:
            data = f.read()
    except OSError:
        raise Http404("The image file is missing.") from None
    try:
        base = fit_image(data, box)
    except ArtifactError:
        raise Http404("The image could not be read.") from None
    if base.mode != "RGB":
        flat = Image.new("RGB", base.size, (255, 255, 255))  # transparent images on white
        flat.paste(base, None, base.getchannel("A") if base.mode == "RGBA" else None)
        base = flat
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    # Kept instances first, so a rejected outline is never hidden under a fill.
    for mark in [m for m in marks if not m.rejected] + [m for m in marks if m.rejected]:
        shape = _scaled_mask(mark.mask, base.size)
        if shape is None:
            continue
        colour = colour_for(mark.concept_index)
        if mark.rejected:
            inner = shape.filter(ImageFilter.MinFilter(OUTLINE[size]))
            layer.paste((*colour, 255), None, ImageChops.subtract(shape, inner))
        else:
            layer.paste((*colour, FILL_ALPHA), None, shape)
        del shape
    out = Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=JPEG_QUALITY[size], optimize=True)
    return buf.getvalue()


def _scaled_mask(mask: Mask, size: tuple[int, int]) -> Image.Image | None:
    """The mask at ``size`` as an "L" image with soft edges (scaled at twice the size, nearest,
    then halved), or None when its file cannot be read."""
    try:
        data = read_file(mask.file)
        im = open_untrusted(data, f"mask {mask.number}", source="")
    except (OSError, ArtifactError):
        logger.warning("Mask %s could not be read for a batch overlay", mask.pk, exc_info=True)
        return None
    del data
    with im:
        plain = im if im.mode == "1" else binarize(im)
        width, height = size
        big = plain.resize((width * 2, height * 2), NEAREST)
    return big.convert("L").reduce(2)
