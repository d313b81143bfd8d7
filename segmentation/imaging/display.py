"""The display copy of a stored image: what pages and the viewer load instead of the original.

A 12 MP phone photo is shown at most a couple of thousand pixels wide, so sending it whole
costs every page view its full size in bytes and its full 48 MB of decoded RGBA in the browser.
``render_display`` makes a copy whose long side is at most ``SAM3WEB_DISPLAY_SIZE`` (2,048 px
unless set): lossy WebP at a good quality for opaque images, PNG for images with transparency
(a lossy copy would fringe their edges). Images already small enough get no copy (None): pages
load the original. Masks, boxes and prompt coordinates stay in the original's pixels; the viewer
stretches the copy over them, and loads the original when zoomed in past the copy's detail.

The stored original has passed intake (it decodes, it is not a bomb), but it is still read with
our own parsers only, and its EXIF orientation applied as a browser would show it.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass

from django.conf import settings
from PIL import Image

from segmentation.imaging.decode import (
    EXIF_TRANSPOSE,
    ImageRejected,
    displayable,
    max_pixels,
    open_header,
    orientation,
)

logger = logging.getLogger(__name__)

WEBP_QUALITY = 80
# libwebp's effort (0-6): 2 makes a 2,016×1,512 photo in ~0.1 s on a small server, within a
# few percent of 4's size at a third of its time; the copy is made while the person waits.
WEBP_METHOD = 2
# A JPEG decodes at 1/2, 1/4 or 1/8 of its size for a fraction of a full decode. When one of
# those lands at most this far under the limit, it is the copy as it is (a 4032×3024 photo:
# 2016×1512), without resampling the full-size pixels.
DRAFT_SLACK = 0.85


@dataclass(frozen=True)
class Rendition:
    data: bytes
    content_type: str  # image/webp | image/png
    extension: str  # webp | png
    width: int
    height: int


def display_size() -> int:
    """SAM3WEB_DISPLAY_SIZE: the longest side of a display copy; 0 turns display copies off."""
    return int(getattr(settings, "SAM3WEB_DISPLAY_SIZE", 2048))


def needs_display(width: int, height: int, limit: int | None = None) -> bool:
    """Whether an image of this size gets a display copy."""
    limit = display_size() if limit is None else limit
    return limit > 0 and max(width, height) > limit


def fit(width: int, height: int, limit: int) -> tuple[int, int]:
    """The size within limit × limit with the same aspect ratio (each side at least 1)."""
    scale = limit / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def render_display(data: bytes, limit: int | None = None) -> Rendition | None:
    """The display copy of an image (bytes that passed intake), or None when the image is no
    larger than ``limit`` (or copies are off). Raises ImageRejected for bytes we cannot read."""
    limit = display_size() if limit is None else limit
    if limit <= 0:
        return None
    im = open_header(bytes(data))
    with im:
        if im.width * im.height > max_pixels():
            raise ImageRejected("This image has too many pixels to show.", "too_many_pixels")
        turn = orientation(im)
        # Sizes as the person sees the image: a quarter turn swaps width and height.
        stored_w, stored_h = im.size
        seen_w, seen_h = (stored_h, stored_w) if turn in (5, 6, 7, 8) else (stored_w, stored_h)
        if not needs_display(seen_w, seen_h, limit):
            return None
        if im.format in ("JPEG", "MPO"):
            _draft(im, limit)
        im.load()
        icc = im.info.get("icc_profile") or None
        out: Image.Image = im
        if "transparency" in im.info:
            out = im.convert("RGBA")  # a tRNS colour or palette entry: real alpha from here
        elif im.mode not in ("L", "RGB", "RGBA"):
            out = displayable(im)
        if max(out.size) > limit:
            target = fit(out.width, out.height, limit)
            # reducing_gap: box-reduce by whole factors first, then Lanczos for the rest.
            out = out.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
        if turn != 1:
            out = out.transpose(EXIF_TRANSPOSE[turn])
        # Encoded before the file closes: closing frees the pixels of a copy never made.
        return _encode(out, icc)


def _draft(im: Image.Image, limit: int) -> None:
    """Decode the JPEG at a reduced scale: one that is the copy as it is, if there is one close
    under the limit; else the smallest still larger than the copy (then resampled)."""
    long_side = max(im.size)
    for k in (2, 4, 8):
        reduced = math.ceil(long_side / k)
        if reduced <= limit:
            if reduced >= limit * DRAFT_SLACK:
                # Pillow picks the largest scale that keeps the image at least this size.
                im.draft(None, (max(1, im.width // k), max(1, im.height // k)))
                return
            break
    im.draft(None, fit(*im.size, limit))


def _has_transparency(im: Image.Image) -> bool:
    if im.mode in ("RGBA", "LA", "PA"):
        lo, _hi = im.getchannel("A").getextrema()
        assert isinstance(lo, int | float)  # one band: numbers, not tuples
        return lo < 255
    return "transparency" in im.info


def _encode(im: Image.Image, icc: bytes | None) -> Rendition:
    buf = io.BytesIO()
    if _has_transparency(im):
        im.save(buf, "PNG", optimize=False, icc_profile=icc)
        return Rendition(buf.getvalue(), "image/png", "png", im.width, im.height)
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    im.save(buf, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD, icc_profile=icc or b"")
    return Rendition(buf.getvalue(), "image/webp", "webp", im.width, im.height)


def content_type_of(name: str) -> str:
    """The content type of a stored display copy, by the extension we gave it."""
    suffix = name.rsplit(".", 1)[-1].lower()
    return {"webp": "image/webp", "png": "image/png", "jpg": "image/jpeg"}.get(suffix, "image/png")
