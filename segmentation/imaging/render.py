"""Drawing masks: the overlay (every instance in its colour) and the thumbnail (the image as
the person sees it, with the overlay), in ``PALETTE`` colours."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable

from PIL import Image

from segmentation.imaging.decode import (
    EXIF_TRANSPOSE,
    ImageRejected,
    displayable,
    max_pixels,
    open_header,
    orientation,
)
from segmentation.imaging.masks import (
    NEAREST,
    ArtifactError,
    binarize,
    check_size,
    encode_png,
    open_untrusted,
    too_many_pixels,
)

logger = logging.getLogger(__name__)

logger = logging.getLogger(__name__)

# matplotlib's tab10, in order: what people know from notebooks, and distinct at 50% alpha.
PALETTE: list[tuple[int, int, int]] = [
    (31, 119, 180),  # blue
    (255, 127, 14),  # orange
    (44, 160, 44),  # green
    (214, 39, 40),  # red
    (148, 103, 189),  # purple
    (140, 86, 75),  # brown
    (227, 119, 194),  # pink
    (127, 127, 127),  # grey
    (188, 189, 34),  # olive
    (23, 190, 207),  # cyan
]


def colour_for(index: int) -> tuple[int, int, int]:
    """The overlay colour of instance ``index``."""
    return PALETTE[index % len(PALETTE)]


THUMBNAIL_SIZE = (240, 180)
THUMBNAIL_QUALITY = 80


def _check_colour(colour: object) -> tuple[int, int, int]:
    if (
        isinstance(colour, list | tuple)
        and len(colour) == 3
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)
    ):
        r, g, b = colour
        return (r, g, b)
    raise ValueError(f"a colour is 3 integers 0-255, not {colour!r:.60}")


def render_overlay(
    mask_pngs: Iterable[tuple[bytes, tuple[int, int, int]]],
    width: int,
    height: int,
    *,
    alpha: int = 128,
) -> bytes:
    """An RGBA PNG at (width, height): transparent except the masks, each in its colour at
    ``alpha``. Masks are decoded one at a time as the iterable yields them (stream them from
    storage), so memory holds the canvas and one mask. Where masks overlap, the later one's
    colour replaces the earlier one's, so the overlay's alpha stays ``alpha`` everywhere and
    overlapping masks do not darken the photo more than single ones. A mask at another size is
    stretched (nearest) to the canvas."""
    width, height = check_size(width, height, "the overlay")
    if not (isinstance(alpha, int) and 0 <= alpha <= 255):
        raise ValueError(f"alpha is 0-255, not {alpha!r}")
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    for number, (png, colour) in enumerate(mask_pngs):
        fill = (*_check_colour(colour), alpha)
        im = open_untrusted(png, f"mask {number}", source="")
        with im:
            # Our own masks are plain "1" PNGs and are used as they are, without a copy.
            plain = im.mode == "1" and "transparency" not in im.info
            mask = im if plain else binarize(im)
            if mask.size != (width, height):
                mask = mask.resize((width, height), NEAREST)
            canvas.paste(fill, None, mask)  # a "1" mask: replace exactly the object pixels
            del mask
    return encode_png(canvas)


def render_thumbnail(
    image_bytes: bytes, overlay_png: bytes | None, *, size: tuple[int, int] = THUMBNAIL_SIZE
) -> bytes:
    """A JPEG (quality 80) that fits within ``size``, keeping the image's aspect ratio, of the
    image as the person sees it (EXIF orientation applied) with the overlay on top. Both are
    scaled down before they meet; a JPEG is decoded at a reduced scale (Image.draft), so a 12 MP
    photo costs a fraction of a full decode. Raises ArtifactError (permanent) for bytes that are
    not an image."""
    tw, th = size
    if not (isinstance(tw, int) and isinstance(th, int) and tw > 0 and th > 0):
        raise ValueError(f"a thumbnail size is two positive integers, not {size!r}")
    data = bytes(image_bytes)
    base = _thumbnail_base(data, (tw, th))
    if overlay_png is not None:
        overlay = open_untrusted(overlay_png, "the overlay", source="")
        with overlay:
            layer = overlay if overlay.mode == "RGBA" else overlay.convert("RGBA")
            # resize premultiplies alpha, so transparent pixels do not bleed black into edges.
            layer = layer.resize(base.size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        base = Image.alpha_composite(base.convert("RGBA"), layer)
    if base.mode == "RGBA":
        flat = Image.new("RGB", base.size, (255, 255, 255))  # transparent photos on white
        flat.paste(base, None, base.getchannel("A"))
        base = flat
    buf = io.BytesIO()
    base.save(buf, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return buf.getvalue()


def fit_image(image_bytes: bytes, size: tuple[int, int]) -> Image.Image:
    """The image as the person sees it (EXIF orientation applied), scaled down to fit ``size``
    (never up), as RGB or RGBA; a JPEG is decoded at a reduced scale. Raises ArtifactError
    (permanent) for bytes that are not an image."""
    return _thumbnail_base(bytes(image_bytes), size)


def _thumbnail_base(data: bytes, size: tuple[int, int]) -> Image.Image:
    """The image, upright, scaled to fit ``size``, as RGB (RGBA where it has transparency)."""
    # Open the header ourselves so draft() can act before any pixel is decoded.
    limit = max_pixels()
    try:
        im = open_header(data)
    except ImageRejected:
        raise ArtifactError(
            "The image could not be read to make a thumbnail.", permanent=True, code="not_image"
        ) from None
    except Image.DecompressionBombError:
        raise too_many_pixels("the image", None, limit, "") from None
    with im:
        if im.width * im.height > limit:
            raise too_many_pixels("the image", im.size, limit, "")
        turn = orientation(im)
        # The box in the stored pixels' orientation: a 90° turn swaps width and height.
        box = (size[1], size[0]) if turn in (5, 6, 7, 8) else size
        if im.format in ("JPEG", "MPO"):
            im.draft("RGB", box)  # decode at 1/2, 1/4 or 1/8 scale, still at least box
        try:
            im.load()
            small = im if im.mode in ("RGB", "RGBA") else displayable(im)
            small.thumbnail(box, Image.Resampling.LANCZOS, reducing_gap=2.0)
            if small is im:
                small = im.copy()
        except Image.DecompressionBombError:
            raise too_many_pixels("the image", im.size, limit, "") from None
        except Exception as exc:
            logger.info("thumbnail source failed to decode: %s: %s", type(exc).__name__, exc)
            raise ArtifactError(
                "The image could not be read to make a thumbnail.", permanent=True, code="damaged"
            ) from None
    if turn != 1:
        small = small.transpose(EXIF_TRANSPOSE[turn])
    return small if small.mode in ("RGB", "RGBA") else small.convert("RGB")
