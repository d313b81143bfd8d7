"""What every piece of image code shares: which formats we parse, reading only a header,
the most helpful refusal for bytes we cannot read, EXIF orientation, and high-bit images made
displayable. Untrusted bytes only ever meet the Pillow parsers registered here: five for images we
store and engines return (OPEN_ORDER), those and TIFF and HEIF for what people give us
(INTAKE_ORDER), which intake always converts to one of the five."""

from __future__ import annotations

import io
import logging

import pillow_heif
from django.conf import settings

# Importing the plugins registers them with Pillow, so Image.OPEN holds exactly these.
from PIL import (
    AvifImagePlugin,  # noqa: F401
    ExifTags,
    GifImagePlugin,  # noqa: F401
    Image,
    ImageFile,
    JpegImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    WebPImagePlugin,  # noqa: F401
)

logger = logging.getLogger(__name__)

# Phones' HEIC/HEIF through libheif. pillow-heif 1.x registers no AVIF opener (its HEIF one
# claims no "avif" brand), so AVIF stays with Pillow's plugin. Embedded thumbnails, depth maps and
# auxiliary images are never parsed: we only ever show the primary image.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

ACCEPTED_FORMATS_TEXT = "JPEG, PNG, WebP, GIF, AVIF, TIFF or HEIC"
# The only Pillow parsers we ever run on untrusted bytes. MPO is reached through JPEG's factory.
OPEN_ORDER = ("JPEG", "PNG", "GIF", "WEBP", "AVIF")
# What people may give us: browsers show neither TIFF nor (outside Safari) HEIF, so intake turns
# both into PNG or JPEG, and stored images, display copies and masks never meet these parsers.
# AVIF before HEIF: both claim the generic "mif1" brand, and each gives way to the other when
# the file is not its own.
INTAKE_ORDER = (*OPEN_ORDER, "TIFF", "HEIF")
# Modes every browser and image library shows as-is; anything else is converted.
DISPLAYABLE_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})
HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
# EXIF orientation -> the transposition that shows the image upright: the same table as
# ImageOps.exif_transpose. We apply it directly because exif_transpose also rewrites the EXIF and
# XMP blobs (which can fail on broken metadata) and we drop EXIF from re-encoded copies anyway.
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageRejected(ValueError):
    """An image (or image URL) we will not take. ``message`` is one or two plain sentences that
    can be shown to the person as they are; ``code`` is a short stable reason for code and tests
    ('empty', 'too_large', 'too_many_pixels', 'corrupt', 'svg', 'web_page', 'not_image',
    'unsupported_format', 'bad_url', 'blocked_address', 'unreachable', 'timeout', 'http_status',
    'redirects')."""

    def __init__(self, message: str, code: str = "rejected") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


def size_text(n: int) -> str:
    """A byte count for people: GiB or MiB for the real limits, plain bytes for tiny test
    limits."""
    if n >= 1024 * 1024 * 1024:
        gib = n / (1024 * 1024 * 1024)
        return f"{gib:.1f}".removesuffix(".0") + " GiB"
    if n >= 100 * 1024:
        mib = n / (1024 * 1024)
        return f"{mib:.1f}".removesuffix(".0") + " MiB"
    return f"{n:,} bytes"


def _not_supported(name: str) -> ImageRejected:
    return ImageRejected(
        f"{name} images are not supported. Please use {ACCEPTED_FORMATS_TEXT}.",
        "unsupported_format",
    )


MSG_EMPTY = "This file is empty (0 bytes)."
MSG_NOT_IMAGE = f"This file is not an image we can read ({ACCEPTED_FORMATS_TEXT})."
MSG_WEB_PAGE = f"This file is a web page (HTML), not an image. Please use {ACCEPTED_FORMATS_TEXT}."
MSG_SVG = (
    "SVG images are not supported, because they can contain scripts. "
    f"Please use {ACCEPTED_FORMATS_TEXT}."
)
MSG_CORRUPT = "This image file is damaged or incomplete, so it cannot be read."
MSG_NO_PIXELS = "This image has no pixels (its width or height is 0)."
MSG_TIFF_PIXELS = (
    "This TIFF stores its pixels in a way we cannot read (such as floating-point colour). "
    "Please save it as an 8- or 16-bit TIFF, or as PNG."
)
MSG_HEIC_KIND = "This HEIC file is of a kind we cannot read. Please export it as JPEG."
MSG_URL_WEB_PAGE = "The URL returned a web page, not an image."


def open_header(data: bytes, formats: tuple[str, ...] = OPEN_ORDER) -> ImageFile.ImageFile:
    """Parse only the header, with only the parsers named in ``formats`` (OPEN_ORDER or
    INTAKE_ORDER).

    This is Image.open's own loop, minus two things: it tries no other formats (EPS, PSD, BMP,
    ... parsers never see untrusted bytes), and it does not run Pillow's global bomb check
    (MAX_IMAGE_PIXELS) at open time, so an oversized image reaches our check with its
    dimensions known and the person is told its size. A multi-page TIFF is read up to its first
    page's header; later pages are never looked at.
    """
    prefix = data[:16]
    claimed = False
    for name in formats:
        factory, accept = Image.OPEN[name]
        verdict = accept(prefix) if accept else True
        if verdict is not True:  # False, or a str explaining a missing codec
            continue
        claimed = True
        try:
            return factory(io.BytesIO(data), "")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise
        except Exception as exc:  # a header that starts right and then goes wrong
            logger.debug("%s header did not parse: %s: %s", name, type(exc).__name__, exc)
            if name == "TIFF" and str(exc) == "unknown pixel mode":  # Pillow's words for it
                raise ImageRejected(MSG_TIFF_PIXELS, "unsupported_format") from None
    raise unreadable(data, claimed)


def unreadable(data: bytes, claimed: bool) -> ImageRejected:
    """The most helpful refusal for bytes none of our parsers could open."""
    head = data[:4096]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n\f").lower()
    if text.startswith(b"<"):
        if b"<svg" in text and b"<html" not in text:
            return ImageRejected(MSG_SVG, "svg")
        if b"<html" in text or not text.startswith(b"<?xml"):  # XHTML starts with <?xml too
            return ImageRejected(MSG_WEB_PAGE, "web_page")
    if claimed:
        return ImageRejected(MSG_CORRUPT, "corrupt")
    if head[4:8] == b"ftyp":
        # ISO media whose major brand the HEIF parser does not take, with a HEIC brand among
        # the compatible ones of the ftyp box.
        brands = head[8:64]
        if any(b in brands for b in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis")):
            return ImageRejected(MSG_HEIC_KIND, "unsupported_format")
    for magic, name in (
        (b"BM", "BMP"),
        (b"\x00\x00\x01\x00", "ICO"),
        (b"8BPS", "Photoshop (PSD)"),
        (b"\xff\x0a", "JPEG XL"),
        (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
        (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
        (b"\xff\x4f\xff\x51", "JPEG 2000"),
        (b"%PDF-", "PDF"),
    ):
        if head.startswith(magic):
            return _not_supported(name)
    return ImageRejected(MSG_NOT_IMAGE, "not_image")


def orientation(im: Image.Image) -> int:
    """EXIF (or XMP) orientation 1-8; 1 for missing, unreadable or nonsense values."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # broken EXIF must not sink an image that decodes fine
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_8bit_gray(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grayscale -> 8-bit 'L', scaled rather than clipped.

    Integer data is shifted right by the fewest bits that fit its largest value into 8 bits:
    a full-range 16-bit image gets the usual >> 8, while 8-bit or 12-bit data stored in a
    16-bit container (common from scientific and camera tools, and how camera-16bit.png in the
    test images is made) keeps its contrast instead of turning black.
    """
    if im.mode == "F":
        lo, hi = _band_extrema(im)
        if lo >= 0 and hi <= 1:  # the usual 0..1 float convention
            scale, offset = 255.0, 0.0
        else:
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            offset = -lo * scale
        return im.point(lambda v: v * scale + offset).convert("L")
    im = im.convert("I")  # exact for I;16 variants
    lo, hi = _band_extrema(im)
    if lo >= 0 and hi <= 0xFFFF:
        shift = max(0, int(hi).bit_length() - 8)
        return im.point([v >> shift for v in range(0x10000)], "L")
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return im.point(lambda v: v * scale - lo * scale).convert("L")


def _band_extrema(im: Image.Image) -> tuple[float, float]:
    """(min, max) of a single-band image (getextrema is typed for every mode at once)."""
    lo, hi = im.getextrema()
    assert isinstance(lo, int | float) and isinstance(hi, int | float)
    return lo, hi


def displayable(im: Image.Image) -> Image.Image:
    """RGB or RGBA (keeping transparency where there is some) for drawing on."""
    if im.mode in HIGH_BIT_MODES:
        return to_8bit_gray(im)
    if im.mode in ("1", "L", "RGB"):
        return im.convert("RGB")
    return im.convert("RGBA")  # P, LA, CMYK, ...


def image_format(data: bytes) -> str | None:
    """Which of our formats the first bytes claim to be, by Pillow's own signature checks."""
    prefix = data[:16]
    for name in OPEN_ORDER:
        _factory, accept = Image.OPEN[name]
        if accept is not None and accept(prefix) is True:
            return name
    return None


def max_pixels() -> int:
    """SAM3WEB_MAX_IMAGE_PIXELS, with Pillow's own limit (89 MP unless someone changed it) as a
    ceiling: open_header skips Image.open's bomb check, so a larger setting cannot switch it
    off."""
    limit = int(settings.SAM3WEB_MAX_IMAGE_PIXELS)
    if Image.MAX_IMAGE_PIXELS is not None:
        limit = min(limit, int(Image.MAX_IMAGE_PIXELS))
    return limit
