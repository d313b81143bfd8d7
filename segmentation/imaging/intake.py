"""Image intake: everything that turns bytes from a person (an upload, a pasted URL, a data:
URI) into an image we are willing to store, show and send to SAM 3.

``intake_bytes`` decides by content (never by file name or Content-Type) whether the bytes are
a JPEG, PNG, WebP, GIF, AVIF, TIFF or HEIC/HEIF we can fully decode, refuses decompression bombs
from the header before a single pixel is decoded, applies EXIF orientation, and re-encodes only
when browsers or the model could not be expected to show the original the way the person sees
it: always for TIFF (first page only) and HEIF, which browsers do not show.
``intake_url`` downloads through ``safe_fetch`` first; ``intake_data_uri`` decodes one.

Settings are read at call time, so ``override_settings`` works in tests:
``SAM3WEB_MAX_IMAGE_BYTES``, ``SAM3WEB_MAX_IMAGE_PIXELS``, ``SAM3WEB_FETCH_TIMEOUT``,
``SAM3WEB_FETCH_MAX_REDIRECTS`` and ``SAM3WEB_OUTBOUND_ALLOW`` (private hosts that may be reached).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
from django.conf import settings
from PIL import Image, ImageFile

from segmentation.imaging.decode import (
    DISPLAYABLE_MODES,
    EXIF_TRANSPOSE,
    HIGH_BIT_MODES,
    INTAKE_ORDER,
    MSG_CORRUPT,
    MSG_EMPTY,
    MSG_NO_PIXELS,
    MSG_URL_WEB_PAGE,
    ImageRejected,
    max_pixels,
    open_header,
    orientation,
    size_text,
    to_8bit_gray,
)
from segmentation.imaging.safe_fetch import FetchError, fetch

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2000
USER_AGENT = "sam3web/0.1 (+image fetch)"
# Pillow format name -> (content type, extension) of what we store and send.
_OUTPUT_TYPES: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
    "AVIF": ("image/avif", "avif"),
}
# Formats whose original bytes may be stored as they are (when nothing needs changing).
_KEPT_AS_IS = frozenset({"JPEG", "PNG", "WEBP", "AVIF"})
# Modes with an alpha band (LAB's "A" is a colour axis, not alpha).
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_JPEG_QUALITY = 95


@dataclass(frozen=True)
class IntakeResult:
    data: bytes  # what to store and send: the original bytes unless we had to re-encode
    content_type: str  # image/jpeg | image/png | image/webp | image/gif | image/avif
    extension: str  # jpg | png | webp | gif | avif
    width: int  # as the person sees it, after EXIF orientation
    height: int
    converted: bool  # True when data is our re-encoded copy rather than the original bytes
    # Pillow's name for the original: JPEG, MPO, PNG, GIF, WEBP, AVIF, TIFF, HEIF (HEIC too)
    source_format: str
    sha256: str  # hex digest of data


def _too_large(limit: int, *, from_url: bool = False) -> ImageRejected:
    what = "The image at that link" if from_url else "This file"
    return ImageRejected(f"{what} is larger than the {size_text(limit)} limit.", "too_large")


def _too_many_pixels(size: tuple[int, int] | None, limit: int) -> ImageRejected:
    limit_text = f"{limit / 1_000_000:g} megapixels"
    if size is None:  # only Pillow's own bomb check knew the size
        return ImageRejected(
            f"This image has too many pixels; the limit is {limit_text}.", "too_many_pixels"
        )
    w, h = size
    megapixels = f"{w * h / 1_000_000:,.1f}".removesuffix(".0")
    return ImageRejected(
        f"This image is {w:,}×{h:,} pixels ({megapixels} megapixels); the limit is {limit_text}.",
        "too_many_pixels",
    )


# --- intake -------------------------------------------------------------------------------------


def intake_bytes(data: bytes) -> IntakeResult:
    """Check and normalise an image given as bytes. Raises ImageRejected, and nothing else."""
    data = bytes(data)  # also accepts bytearray/memoryview; a no-op for bytes
    max_bytes = settings.SAM3WEB_MAX_IMAGE_BYTES
    limit = max_pixels()
    if not data:
        raise ImageRejected(MSG_EMPTY, "empty")
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    # Our own size check runs first, but Pillow also checks inside some plugins (MPO, GIF
    # frames), and its DecompressionBombWarning must stop us too, not just print: it becomes an
    # error for this call only. Pillow's other warnings about hostile input ("Corrupt EXIF
    # data", "malformed MPO") are recorded and logged at debug level instead of reaching
    # stderr. (catch_warnings swaps the process-wide filter list; the worst a concurrent
    # thread can see is a bomb warning printed rather than raised, after our own check ran.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _intake(data, limit)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(None, limit) from exc
        finally:
            for warning in caught:
                logger.debug("Pillow warned: %s", warning.message)


def intake_upload(f: Any) -> IntakeResult:
    """intake_bytes for a Django UploadedFile, without reading more than the byte limit."""
    max_bytes = settings.SAM3WEB_MAX_IMAGE_BYTES
    # The declared size comes from the upload handler (the bytes it actually received), so an
    # oversized file is refused before we read any of it.
    size = getattr(f, "size", None)
    if isinstance(size, int) and size > max_bytes:
        raise _too_large(max_bytes)
    parts: list[bytes] = []
    total = 0
    # ...but a file object can still hold more than it claims; count while reading.
    for chunk in f.chunks():
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(max_bytes)
        parts.append(chunk)
    return intake_bytes(b"".join(parts))


def data_uri(data: bytes, content_type: str) -> str:
    """A data: URI for inline use, e.g. 'data:image/png;base64,iVBOR...'."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def _intake(data: bytes, limit: int) -> IntakeResult:
    im = open_header(data, INTAKE_ORDER)
    with im:
        # Only the header has been read so far: refuse bombs before any pixel is decoded.
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageRejected(MSG_NO_PIXELS, "no_pixels")
        if width * height > limit:
            raise _too_many_pixels((width, height), limit)
        # A full decode is the only reliable way to find truncated or corrupt data. Pillow
        # raises a wide, undocumented set of exception types on hostile input (OSError,
        # SyntaxError, ValueError, EOFError, struct.error, IndexError, ...): all mean "can't
        # read it". Bomb errors are let through to be reported as such.
        if ImageFile.LOAD_TRUNCATED_IMAGES:  # pragma: no cover - someone changed a global
            logger.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on: truncated images pass")
        try:
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise
        except Exception as exc:
            logger.info("image failed to decode: %s: %s", type(exc).__name__, exc)
            raise ImageRejected(MSG_CORRUPT, "corrupt") from exc
        # pillow-heif takes on the size libheif decoded, which need not be the header's.
        if im.width * im.height > limit:
            raise _too_many_pixels(im.size, limit)
        try:
            return _normalise(im, data)
        except (ImageRejected, Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise
        except Exception as exc:
            # The image decoded, so this is odd metadata or an encoder corner case; still the
            # person gets a clear answer rather than a 500.
            logger.warning("could not normalise image", exc_info=True)
            raise ImageRejected(MSG_CORRUPT, "corrupt") from exc


def _normalise(im: ImageFile.ImageFile, data: bytes) -> IntakeResult:
    source_format = im.format or ""
    family = "JPEG" if source_format == "MPO" else source_format  # MPO is JPEG plus extras
    source_mode = im.mode
    icc = im.info.get("icc_profile") or None
    transparency = im.info.get("transparency")

    out: Image.Image = im
    if out.mode == "CMYK":
        # Adobe CMYK/YCCK JPEGs and CMYK TIFFs: browsers disagree on how (and whether) to show
        # them. Pillow already undoes Adobe's inversion; its conversion is the naive one (no ICC
        # transform).
        out = out.convert("RGB")
    elif out.mode in HIGH_BIT_MODES:
        out = to_8bit_gray(out)  # 16-bit RGB TIFFs come from Pillow as 8-bit RGB already
    elif out.mode not in DISPLAYABLE_MODES:
        out = out.convert("RGBA" if out.mode in _ALPHA_MODES else "RGB")

    # Read after load(), and applied exactly once: Pillow turns a TIFF upright while loading it
    # and drops its orientation tag then, and libheif turns a HEIF by its own irot/imir boxes
    # (HEIF's orientation; the EXIF tag in a HEIF only describes them, and pillow-heif resets it).
    turn = 1 if family == "HEIF" else orientation(im)
    if turn != 1:
        out = out.transpose(EXIF_TRANSPOSE[turn])

    # GIF always becomes a PNG of its first frame: SAM 3 sees one frame, and so must the person.
    # TIFF and HEIF always become PNG or JPEG: browsers do not show them.
    if out is im and family in _KEPT_AS_IS:
        content_type, extension = _OUTPUT_TYPES[family]
        return IntakeResult(
            data=data,
            content_type=content_type,
            extension=extension,
            width=im.width,
            height=im.height,
            converted=False,
            source_format=source_format,
            sha256=hashlib.sha256(data).hexdigest(),
        )

    # JPEG where the original was lossy already (a second pass at quality 95 loses nothing one
    # can see, and a PNG of a photo is several times larger); PNG, lossless, for everything else:
    # an uncompressed or LZW TIFF is often a scan or a microscope image whose pixels matter.
    lossy = family in ("JPEG", "HEIF") or (
        family == "TIFF" and im.info.get("compression") in ("jpeg", "tiff_jpeg")
    )
    target = "JPEG" if lossy and out.mode in ("L", "RGB") else "PNG"
    keep_icc = icc if _icc_fits(icc, out.mode) else None
    keep_transparency = (
        transparency if out.mode == source_mode and out.mode in ("1", "L", "P", "RGB") else None
    )
    encoded = _encode(out, target, keep_icc, keep_transparency)
    content_type, extension = _OUTPUT_TYPES[target]
    return IntakeResult(
        data=encoded,
        content_type=content_type,
        extension=extension,
        width=out.width,
        height=out.height,
        converted=True,
        source_format=source_format,
        sha256=hashlib.sha256(encoded).hexdigest(),
    )


def _icc_fits(icc: bytes | None, mode: str) -> bool:
    """Whether an ICC profile's colour space (header bytes 16-19) matches the output mode."""
    if not icc or len(icc) < 20:
        return False
    space = icc[16:20]
    if mode in ("RGB", "RGBA", "P"):
        return space == b"RGB "
    if mode in ("L", "LA"):
        return space == b"GRAY"
    return False


def _encode(im: Image.Image, target: str, icc: bytes | None, transparency: Any) -> bytes:
    """Encode our copy. EXIF is deliberately left out: the only field that mattered (orientation)
    has been applied, and the rest (thumbnail, dimensions, GPS) would now be stale or unwanted.
    icc_profile and transparency are always passed, None included, because Pillow's PNG writer
    otherwise falls back to whatever the source's info dict holds."""
    attempts = [(icc, transparency)]
    if icc is not None or transparency is not None:
        # An odd ICC profile or tRNS value from the original must not block the image itself.
        attempts.append((None, None))
    for number, (profile, key) in enumerate(attempts, start=1):
        params: dict[str, Any] = {"icc_profile": profile}
        if target == "JPEG":
            params["quality"] = _JPEG_QUALITY
        else:
            params["transparency"] = key
        buf = io.BytesIO()
        try:
            im.save(buf, target, **params)
        except (ValueError, OSError, TypeError):
            if number == len(attempts):
                raise
            continue
        return buf.getvalue()
    raise AssertionError("unreachable")  # pragma: no cover


# --- URLs and data: URIs ---------------------------------------------------------------------


def check_url(raw: str) -> httpx.URL:
    """Scheme, length and host checks; the address check happens at connect time."""
    if not isinstance(raw, str) or not raw.strip():
        raise ImageRejected("Please give a link to an image.", "bad_url")
    raw = raw.strip()
    if len(raw) > MAX_URL_LENGTH:
        raise ImageRejected(
            f"The link is too long (over {MAX_URL_LENGTH:,} characters).", "bad_url"
        )
    try:
        scheme = urlsplit(raw).scheme.lower()
    except ValueError:
        raise ImageRejected("That does not look like a web address.", "bad_url") from None
    if scheme not in ("http", "https"):
        if not scheme:
            raise ImageRejected("The link must start with http:// or https://.", "bad_url")
        raise ImageRejected(
            f"Only http:// and https:// links can be fetched, not {scheme}: links.", "bad_url"
        )
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, ValueError):
        raise ImageRejected("That does not look like a web address.", "bad_url") from None
    if not url.host:
        raise ImageRejected("The link has no server name in it.", "bad_url")
    return url


def intake_url(url: str) -> IntakeResult:
    """Download an image URL a person gave us, SSRF-safely, and take it in; with a clearer
    message when the URL gave us a web page. Raises ImageRejected."""
    timeout = float(settings.SAM3WEB_FETCH_TIMEOUT)
    max_bytes = settings.SAM3WEB_MAX_IMAGE_BYTES
    try:
        fetched = fetch(
            check_url(url),
            check_url=check_url,
            timeout=timeout,
            max_bytes=max_bytes,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "image/avif,image/webp,image/png,image/jpeg,image/gif;q=0.9,*/*;q=0.1",
            },
        )
    except FetchError as exc:
        raise _refusal(exc, timeout, max_bytes) from None
    try:
        return intake_bytes(fetched.body)
    except ImageRejected as exc:
        if exc.code in ("web_page", "not_image", "corrupt") and (
            fetched.content_type in ("text/html", "application/xhtml+xml")
            or fetched.body[:1024].lstrip()[:1] == b"<"
        ):
            raise ImageRejected(MSG_URL_WEB_PAGE, "web_page") from exc
        raise


def _refusal(exc: FetchError, timeout: float, max_bytes: int) -> ImageRejected:
    """A failed download, in a sentence a person can act on."""
    host = exc.host
    if exc.kind == "blocked":
        return ImageRejected(
            f"The link points to a private or local network address ({host}), "
            "so we will not fetch it.",
            "blocked_address",
        )
    if exc.kind == "dns":
        return ImageRejected(
            f"Could not find the server {host}. Please check the link.", "unreachable"
        )
    if exc.kind == "timeout":
        unit = "second" if timeout == 1 else "seconds"
        return ImageRejected(
            f"Downloading the image took longer than {timeout:g} {unit}, so we stopped.",
            "timeout",
        )
    if exc.kind == "tls":
        return ImageRejected(
            f"Could not make a secure connection to {host} "
            "(its certificate could not be verified).",
            "unreachable",
        )
    if exc.kind == "connect":
        return ImageRejected(f"Could not connect to {host}.", "unreachable")
    if exc.kind == "broken":
        return ImageRejected(
            f"The connection to {host} broke off before the image was complete.", "unreachable"
        )
    if exc.kind == "status":
        reason = f" {exc.reason}" if exc.reason else ""
        return ImageRejected(
            f"The server answered HTTP {exc.status}{reason} instead of sending the image.",
            "http_status",
        )
    if exc.kind == "redirect_loop":
        return ImageRejected("The link redirects in a loop.", "redirects")
    if exc.kind == "too_many_redirects":
        return ImageRejected(
            f"The link redirected more than {exc.status} times, so we stopped following it.",
            "redirects",
        )
    if exc.kind == "bad_redirect":
        return ImageRejected("The link redirected to an address that is not valid.", "bad_url")
    if exc.kind == "too_large":
        return _too_large(max_bytes, from_url=True)
    return ImageRejected(f"Could not download the image from {host}.", "unreachable")


class BadDataURI(ValueError):
    """A data: URI that does not hold an image. ``kind``: malformed, not_image (``media_type``
    says what it holds), bad_base64, too_large."""

    def __init__(self, kind: str, media_type: str = "") -> None:
        super().__init__(kind)
        self.kind = kind
        self.media_type = media_type


def decode_data_uri(url: str, max_bytes: int) -> bytes:
    """data:[<mediatype>][;base64],<data> (RFC 2397), decoded without touching the network.
    Only image/* media types are taken. Raises BadDataURI."""
    header, comma, payload = url[5:].partition(",")
    if url[:5].lower() != "data:" or not comma:
        raise BadDataURI("malformed")
    params = [p.strip().lower() for p in header.split(";")]
    media_type = params[0] or "text/plain"  # RFC 2397's default
    if not media_type.startswith("image/"):
        raise BadDataURI("not_image", media_type)
    if "base64" in params[1:]:
        # Whitespace (line-wrapped base64) and percent-escapes are legal in a URI; padding is
        # often dropped; URL-safe alphabets turn up too. Anything else is not base64.
        text = "".join(payload.split())
        if len(text) // 4 * 3 > max_bytes + 3:  # refuse before decoding anything
            raise BadDataURI("too_large")
        if "%" in text:
            text = unquote_to_bytes(text).decode("ascii", "replace")
        text = text.replace("-", "+").replace("_", "/")
        text += "=" * (-len(text) % 4)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadDataURI("bad_base64") from None
    else:
        if len(payload) > 3 * max_bytes:  # each byte is at most 3 characters (%xx)
            raise BadDataURI("too_large")
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise BadDataURI("too_large")
    return data


def intake_data_uri(url: str) -> IntakeResult:
    """An image given inline as a data: URI (as Runflow's image_url takes one)."""
    max_bytes = settings.SAM3WEB_MAX_IMAGE_BYTES
    try:
        data = decode_data_uri(url, max_bytes)
    except BadDataURI as exc:
        if exc.kind == "too_large":
            raise _too_large(max_bytes) from None
        if exc.kind == "not_image":
            raise ImageRejected(
                f"The data: URI holds {exc.media_type}, not an image.", "not_image"
            ) from None
        if exc.kind == "bad_base64":
            raise ImageRejected("The data: URI is not valid base64.", "bad_url") from None
        raise ImageRejected(
            "That is not a data: URI (data:image/png;base64,...).", "bad_url"
        ) from None
    return intake_bytes(data)
