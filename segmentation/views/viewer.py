"""Data for the run page's canvas viewer.

* ``viewer_data``: one small JSON document with everything the viewer draws: the image, each
  instance (score, box, area, colour, where its crop lies and its URL) and the prompts.
* ``mask_crop``: one instance's mask cut to the region it covers, as a 1-bit palette PNG with
  a transparent background (white object pixels). A browser then decodes a few hundred
  kilopixels per instance instead of a full-size mask per instance (32 masks of a 12 MP photo
  would be 1.5 GB of decoded RGBA).

The region of a crop is the union of the instance's box and its mask's own bounding box: the
box is Runflow's when it sent one, and a model's box need not contain every mask pixel, so
cropping to the box alone could clip the mask. Finding the mask's bounding box means decoding
the mask (about 8 ms for 12 MP), so a decoded mask yields both its region and its crop, and
both are remembered in the cache, keyed by the mask's version (its file never changes once
copied; a retried copy has a new ``copied_at`` and so a new key). The first viewer.json of a
run decodes each mask once; the browser's crop requests that follow are then cache hits.

A public link (``share_views``) serves the same two with its own URLs (``Links``), so its
viewer.json never points into the signed-in app.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_GET
from PIL import Image

from segmentation.imaging.render import colour_for
from segmentation.imaging.store import read_file
from segmentation.models import Mask, Run

# A crop's URL carries its mask's version, so a year of caching is safe.
CROP_CACHE_CONTROL = "private, max-age=31536000, immutable"
CROP_PALETTE = [0, 0, 0, 255, 255, 255]  # index 0: transparent (tRNS), index 1: white
RECT_CACHE_SECONDS = 7 * 24 * 3600
CROP_CACHE_SECONDS = 24 * 3600

Rect = tuple[int, int, int, int]  # x, y, width, height in image pixels


@dataclass(frozen=True)
class Links:
    """Where the viewer finds a run's files: the team's URLs, or those of a public link
    (``share_views``), which must never point back into the signed-in app."""

    image: str  # what the viewer draws: the display copy (or the original, when small)
    full_image: str  # the original, loaded when zoomed in past the display copy's detail
    crop: Callable[[int], str]  # instance number -> URL of its crop (before ``?v=``)
    mask: Callable[[int], str]  # instance number -> URL of its full-size mask
    run_id: str | None  # named in the JSON for the team; a public link does not reveal it


def team_links(run: Run) -> Links:
    return Links(
        image=reverse("image_display", args=[run.image_id]),
        full_image=reverse("image_file", args=[run.image_id]),
        crop=lambda number: reverse("mask_crop", args=[run.pk, number]),
        mask=lambda number: reverse("mask_file", args=[run.pk, number]),
        run_id=str(run.pk),
    )


@require_GET
def viewer_data(request: HttpRequest, run_id: Any) -> HttpResponse:
    run = get_object_or_404(Run.objects.select_related("image"), pk=run_id)
    return viewer_response(request, run, team_links(run))


def viewer_response(request: HttpRequest, run: Run, links: Links) -> HttpResponse:
    """viewer.json for ``run``, its URLs made by ``links``."""
    image = run.image
    masks = list(run.masks.all())
    body = json.dumps(
        {
            "run": links.run_id,
            "settled": run.settled,
            # width and height are the original's: masks, boxes and prompts are in its pixels.
            "image": {
                "url": links.image,
                "full_url": links.full_image,
                "width": image.width,
                "height": image.height,
            },
            "instances": [_instance(links, m, image.width, image.height) for m in masks],
            "prompts": {"points": run.points, "boxes": run.boxes},
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    # The document changes while masks are being copied: revalidate every time, cheaply.
    etag = '"' + hashlib.blake2s(body, digest_size=12).hexdigest() + '"'
    if etag in request.headers.get("If-None-Match", ""):
        response: HttpResponse = HttpResponseNotModified()
    else:
        response = HttpResponse(body, content_type="application/json")
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


@require_GET
def mask_crop(request: HttpRequest, run_id: Any, number: int) -> HttpResponse:
    mask = get_object_or_404(
        Mask.objects.select_related("run__image"), run_id=run_id, index=number - 1
    )
    return crop_response(mask)


def crop_response(mask: Mask, cache_control: str = CROP_CACHE_CONTROL) -> HttpResponse:
    """One instance's crop as a PNG (see the module's docstring); 404 when there is none."""
    if not mask.file:
        raise Http404("This mask could not be copied.")
    image = mask.run.image
    png = cache.get(_png_key(mask))
    if png is None:
        _, png = _decode(mask, image.width, image.height)
        if png is None:
            raise Http404("This mask is empty.")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = cache_control
    response["Content-Security-Policy"] = "default-src 'none'"
    return response


def _instance(links: Links, mask: Mask, width: int, height: int) -> dict[str, Any]:
    r, g, b = colour_for(mask.index)
    rect = _crop_rect(mask, width, height) if mask.file else None
    crop_url = None
    if rect is not None:
        crop_url = links.crop(mask.number) + f"?v={_version(mask)}"
    return {
        "number": mask.number,
        "index": mask.index,
        "score": mask.score,
        "box": list(mask.box) if mask.box else None,
        "area": mask.area,
        "colour": f"#{r:02x}{g:02x}{b:02x}",
        "crop": list(rect) if rect else None,
        "crop_url": crop_url,
        "mask_url": links.mask(mask.number) if mask.file else None,
        "error": mask.error,
    }


def _crop_rect(mask: Mask, width: int, height: int) -> Rect | None:
    rect = cache.get(_rect_key(mask))
    if rect is None:
        try:
            rect, _ = _decode(mask, width, height)
        except Http404:
            return None
    if not rect:
        return None
    x, y, w, h = rect  # from the cache: a list
    return (x, y, w, h)


def _decode(mask: Mask, width: int, height: int) -> tuple[Rect | None, bytes | None]:
    """The mask's crop region and its crop as a PNG (None, None for an empty mask), from one
    decode of the mask; both go to the cache. Raises Http404 when the file is missing."""
    with _open_mask(mask) as im:
        rect = _union(_clamped_box(mask, width, height), _bbox(im))
        png = None
        if rect is not None:
            x, y, w, h = rect
            png = _one_bit_png(im.crop((x, y, x + w, y + h)))
    # An empty mask is remembered too (as an empty list), so it is not decoded again.
    cache.set(_rect_key(mask), rect or [], RECT_CACHE_SECONDS)
    if png is not None:
        cache.set(_png_key(mask), png, CROP_CACHE_SECONDS)
    return rect, png


def _rect_key(mask: Mask) -> str:
    return f"sam3web:crop-rect:{mask.pk}:{_version(mask)}"


def _png_key(mask: Mask) -> str:
    return f"sam3web:crop-png:{mask.pk}:{_version(mask)}"


def _version(mask: Mask) -> str:
    stamp = f"{mask.file.name}:{mask.copied_at.isoformat() if mask.copied_at else ''}"
    return hashlib.blake2s(stamp.encode(), digest_size=6).hexdigest()


def _open_mask(mask: Mask) -> Image.Image:
    try:
        data = read_file(mask.file)
    except FileNotFoundError:
        raise Http404("The mask file is missing.") from None
    im: Image.Image = Image.open(io.BytesIO(data))
    if im.mode != "1":  # our copies are 1-bit; anything else is thresholded at half
        im = im.convert("L").point(lambda v: 255 if v >= 128 else 0, "1")
    return im


def _bbox(im: Image.Image) -> Rect | None:
    box = im.getbbox()
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return (x0, y0, x1 - x0, y1 - y0)


def _clamped_box(mask: Mask, width: int, height: int) -> Rect | None:
    if mask.box is None:
        return None
    x0, y0, x1, y1 = mask.box
    x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
    y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def _union(a: Rect | None, b: Rect | None) -> Rect | None:
    if a is None or b is None:
        return a or b
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0)


def _one_bit_png(crop: Image.Image) -> bytes:
    """A 1-bit palette PNG: index 1 white, index 0 fully transparent (a tRNS chunk)."""
    # The "1" image's packed rows are exactly a 1-bit palette image's rows: no unpacking.
    out = Image.frombytes("P", crop.size, crop.tobytes(), "raw", "P;1")
    out.putpalette(CROP_PALETTE)
    buf = io.BytesIO()
    out.save(buf, "PNG", transparency=0)
    return buf.getvalue()
