"""Masks an engine hands back, turned into our own copies.

* ``download`` fetches one artifact: a ``data:`` URI (``sync_mode``) is decoded locally, an
  http(s) URL goes through ``safe_fetch`` like an image URL a person pastes, except that the
  engine's own origin may be trusted. It retries what may pass (5xx, time-outs, network
  trouble) within one overall deadline. Errors are ``ArtifactError`` with a sentence for people
  and a ``permanent`` flag that tells the caller whether to try again later.
* ``normalize_mask`` turns whatever came for a mask into our copy: a 1-bit PNG at exactly the
  size of the image the person sees, plus its area and bounding box.
* ``box_to_pixels`` turns a normalized [cx, cy, w, h] box into pixels of that image.

Settings are read at call time: ``SAM3WEB_ARTIFACT_TIMEOUT`` (30 s),
``SAM3WEB_ARTIFACT_MAX_BYTES`` (50 MiB), ``SAM3WEB_ARTIFACT_BACKOFF`` (0.5 s), and the image
ones: ``SAM3WEB_MAX_IMAGE_PIXELS``, ``SAM3WEB_FETCH_MAX_REDIRECTS``,
``SAM3WEB_OUTBOUND_ALLOW``.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass

import httpx
from django.conf import settings
from PIL import Image

from segmentation.imaging.decode import (
    HIGH_BIT_MODES,
    ImageRejected,
    image_format,
    max_pixels,
    open_header,
    size_text,
    to_8bit_gray,
    unreadable,
)
from segmentation.imaging.intake import BadDataURI, decode_data_uri
from segmentation.imaging.safe_fetch import FetchError, Origin, fetch

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# Presigned URLs carry long signatures (an STS session token alone can be 1,000+ characters),
# so the 2,000-character limit for pasted links would be too tight here.
MAX_URL_LENGTH = 16_384
USER_AGENT = "sam3web/0.1 (+artifact download)"
_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "GIF", "AVIF"})
_LOSSLESS = frozenset({"PNG", "GIF"})
NEAREST = Image.Resampling.NEAREST


class ArtifactError(Exception):
    """One artifact could not be had. ``message`` is a sentence for a person; ``permanent`` is
    False when trying again later may work (5xx, timeouts, network trouble) and True when it will
    not (404/410, not an image, too big, a blocked address). ``code`` is a short stable reason for
    code and tests ('http_status', 'timeout', 'network', 'too_large', 'not_image', 'web_page',
    'damaged', 'too_many_pixels', 'blocked_address', 'bad_url', 'redirects', 'empty',
    'bad_data_uri', 'bad_size')."""

    def __init__(self, message: str, permanent: bool, *, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code

    def __str__(self) -> str:
        return self.message


def _cap(what: str) -> str:
    return what[:1].upper() + what[1:]


# --- download -----------------------------------------------------------------------------------


def download(url: str, *, what: str, provider: str, trusted: Origin | None = None) -> bytes:
    """The bytes of one artifact, which are certain to start like an image (PNG, JPEG, WebP,
    GIF or AVIF; normalize_mask decodes them fully). ``provider`` names the engine in messages
    ("Runflow's link for mask 3 has expired"); ``trusted`` is its own origin, fetched without
    the private-address check. Raises ArtifactError, and nothing else.

    A response that is not an image (an HTML error page served with 200, a login page, an XML
    error document) is refused here, as permanent, rather than handed to the caller to store.
    """
    if not isinstance(url, str) or not url.strip():
        raise ArtifactError(f"{provider} gave no link for {what}.", permanent=True, code="bad_url")
    url = url.strip()
    max_bytes = int(settings.SAM3WEB_ARTIFACT_MAX_BYTES)
    if url[:5].lower() == "data:":
        data = _inline(url, what, max_bytes)
        return _check_image_bytes(data, f"The inline data for {what}")
    data = _fetch(url, what, provider, trusted, max_bytes)
    return _check_image_bytes(data, f"{provider}'s link for {what}")


def _check_image_bytes(data: bytes, source: str) -> bytes:
    if not data:
        raise ArtifactError(f"{source} gave an empty file.", permanent=True, code="empty")
    if image_format(data) is not None:
        return data
    if unreadable(data, claimed=False).code == "web_page":
        raise ArtifactError(
            f"{source} gave a web page, not an image.", permanent=True, code="web_page"
        )
    raise ArtifactError(
        f"{source} gave a file that is not an image.", permanent=True, code="not_image"
    )


def _inline(url: str, what: str, max_bytes: int) -> bytes:
    try:
        return decode_data_uri(url, max_bytes)
    except BadDataURI as exc:
        message, code = {
            "malformed": (f"The inline data for {what} is not a valid data: URI.", "bad_data_uri"),
            "not_image": (
                f"The inline data for {what} is {exc.media_type}, not an image.",
                "not_image",
            ),
            "bad_base64": (f"The inline data for {what} is not valid base64.", "bad_data_uri"),
            "too_large": (
                f"The inline data for {what} is larger than the {size_text(max_bytes)} limit.",
                "too_large",
            ),
        }[exc.kind]
        raise ArtifactError(message, permanent=True, code=code) from None


def _fetch(raw_url: str, what: str, provider: str, trusted: Origin | None, max_bytes: int) -> bytes:
    """GET with retries under one overall deadline: a hanging server costs at most the timeout,
    however many attempts and redirects it takes."""
    timeout = float(settings.SAM3WEB_ARTIFACT_TIMEOUT)
    deadline = time.monotonic() + timeout
    bad_url = ArtifactError(
        f"{provider}'s link for {what} is not a valid web address.",
        permanent=True,
        code="bad_url",
    )

    def check_url(raw: str) -> httpx.URL:
        if len(raw) > MAX_URL_LENGTH:
            raise bad_url
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise bad_url from None
        if url.scheme not in ("http", "https") or not url.host:
            raise bad_url
        return url

    start = check_url(raw_url)
    backoff = float(settings.SAM3WEB_ARTIFACT_BACKOFF)
    last: ArtifactError | None = None
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            if time.monotonic() + delay >= deadline:
                break  # no time left for another try
            time.sleep(delay)
        try:
            return fetch(
                start,
                check_url=check_url,
                timeout=timeout,
                deadline=deadline,
                # Each socket wait gets a share of the budget, so a server that goes silent
                # still leaves time for another attempt.
                per_wait=timeout / MAX_ATTEMPTS,
                max_bytes=max_bytes,
                trusted=trusted,
                headers={
                    "User-Agent": USER_AGENT,
                    "Accept": "image/png,image/webp,image/jpeg,image/gif;q=0.9,*/*;q=0.1",
                },
            ).body
        except FetchError as exc:
            error = _refusal(exc, what, provider, timeout, max_bytes)
            # Trying again at once may help after a 5xx, a time-out or network trouble; a 4xx
            # is not retried on the spot (a 429 or 408 may pass later: not permanent).
            if exc.kind == "status" and exc.status < 500 or error.permanent:
                raise error from None
            last = error
            logger.info("download of %s failed (attempt %d): %s", what, attempt + 1, last)
    assert last is not None
    raise last


def _refusal(
    exc: FetchError, what: str, provider: str, timeout: float, max_bytes: int
) -> ArtifactError:
    """A failed download in words, and whether trying again may help."""
    host, link = exc.host, f"{provider}'s link for {what}"
    if exc.kind == "blocked":
        logger.warning("refused to download %s from %s: private address", what, host)
        return ArtifactError(
            f"{link} points to a private or local network address ({host}), "
            "so we did not download it.",
            permanent=True,
            code="blocked_address",
        )
    if exc.kind == "timeout":
        unit = "second" if timeout == 1 else "seconds"
        return ArtifactError(
            f"Downloading {what} from {provider} took longer than {timeout:g} {unit}, "
            "so we stopped.",
            permanent=False,
            code="timeout",
        )
    if exc.kind == "dns":
        return ArtifactError(
            f"Could not find the server {host} to download {what}.", permanent=False, code="network"
        )
    if exc.kind == "tls":
        return ArtifactError(
            f"Could not download {what} from {host} (its certificate could not be verified).",
            permanent=False,
            code="network",
        )
    if exc.kind in ("connect", "broken"):
        return ArtifactError(
            f"Could not download {what} from {host}: the connection failed.",
            permanent=False,
            code="network",
        )
    if exc.kind == "status":
        code = exc.status
        if code >= 500:
            return ArtifactError(
                f"{provider}'s storage failed to send {what} (HTTP {code}).",
                permanent=False,
                code="http_status",
            )
        if code in (404, 410):
            message = f"{link} has expired (HTTP {code})."
        elif code in (401, 403):
            # What S3-style storage answers for an expired presigned URL.
            message = f"{link} was refused (HTTP {code}); it has probably expired."
        else:
            message = f"{link} did not work (HTTP {code})."
        # Time-outs and rate limits are not retried on the spot (no 4xx is), but may pass later.
        return ArtifactError(message, permanent=code not in (408, 425, 429), code="http_status")
    if exc.kind == "redirect_loop":
        return ArtifactError(f"{link} redirects in a loop.", permanent=True, code="redirects")
    if exc.kind == "too_many_redirects":
        return ArtifactError(
            f"{link} redirected more than {exc.status} times.", permanent=True, code="redirects"
        )
    if exc.kind == "too_large":
        return ArtifactError(
            f"{provider}'s file for {what} is larger than the {size_text(max_bytes)} limit.",
            permanent=True,
            code="too_large",
        )
    return ArtifactError(f"{link} is not a valid web address.", permanent=True, code="bad_url")


# --- masks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormalizedMask:
    png: bytes  # our copy: a 1-bit PNG ("1" mode) at exactly (width, height): 255/white = object
    area: int  # object pixels
    bbox: tuple[int, int, int, int] | None  # [x_min, y_min, x_max, y_max) of the object pixels


def too_many_pixels(
    what: str, size: tuple[int, int] | None, limit: int, source: str
) -> ArtifactError:
    shown = f"{size[0]:,}×{size[1]:,} pixels" if size else "too many pixels"
    return ArtifactError(
        f"{_cap(what)}{source} is {shown}, more than the {limit / 1e6:g}-megapixel limit.",
        permanent=True,
        code="too_many_pixels",
    )


def check_size(width: object, height: object, what: str) -> tuple[int, int]:
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height))
    if not ok:
        raise ArtifactError(
            f"Cannot make {what} at {width!r}×{height!r} pixels.", permanent=True, code="bad_size"
        )
    limit = max_pixels()
    if width * height > limit:  # type: ignore[operator]
        raise ArtifactError(
            f"Cannot make {what} at {width:,}×{height:,} pixels: "
            f"that is more than the {limit / 1e6:g}-megapixel limit.",
            permanent=True,
            code="too_many_pixels",
        )
    return width, height  # type: ignore[return-value]


def open_untrusted(data: bytes, what: str, source: str) -> Image.Image:
    """Open and fully decode untrusted image bytes with only our parsers, refusing bombs from the
    header (before a single pixel is decoded). Raises ArtifactError (permanent); its message
    reads f"{what}{source} is ...", e.g. "Mask 3 from Runflow is not an image." """
    data = bytes(data)
    if not data:
        raise ArtifactError(f"{_cap(what)}{source} is empty.", permanent=True, code="empty")
    limit = max_pixels()
    try:
        im = open_header(data)  # header only; no Pillow-wide bomb check at open time
    except ImageRejected as exc:
        if exc.code == "web_page":
            message, code = f"{_cap(what)}{source} is a web page, not an image.", "web_page"
        elif exc.code == "corrupt":
            message, code = f"{_cap(what)}{source} is damaged or incomplete.", "damaged"
        else:
            message, code = f"{_cap(what)}{source} is not an image.", "not_image"
        raise ArtifactError(message, permanent=True, code=code) from None
    except Image.DecompressionBombError:
        raise too_many_pixels(what, None, limit, source) from None
    try:
        if im.format not in _FORMATS:  # pragma: no cover - open_header only knows these
            raise ArtifactError(f"{_cap(what)}{source} is not an image.", permanent=True)
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ArtifactError(
                f"{_cap(what)}{source} has no pixels.", permanent=True, code="damaged"
            )
        if width * height > limit:
            raise too_many_pixels(what, (width, height), limit, source)
        try:
            im.load()
        except Image.DecompressionBombError:  # e.g. a GIF frame larger than its screen
            raise too_many_pixels(what, (width, height), limit, source) from None
        except Exception as exc:  # Pillow's many ways of saying "can't read this"
            logger.info("%s failed to decode: %s: %s", what, type(exc).__name__, exc)
            raise ArtifactError(
                f"{_cap(what)}{source} is damaged or incomplete.",
                permanent=True,
                code="damaged",
            ) from None
    except BaseException:
        im.close()
        raise
    return im


def binarize(im: Image.Image) -> Image.Image:
    """A mode "1" image, 255 = object: alpha > 127 where the image has an alpha channel that is
    not uniformly opaque, else grey value > 127. Always a new image (im may be closed after)."""
    mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        alpha = im.getchannel("A") if mode in ("RGBA", "LA") else im.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha.convert("1", dither=Image.Dither.NONE)  # threshold: > 127
        if "transparency" in im.info and mode in ("P", "L", "RGB"):
            im = im.convert("RGBA")  # so the grey value below is read without the tRNS key
    if mode == "1" and im.mode == "1":
        return im.copy()
    gray = to_8bit_gray(im) if im.mode in HIGH_BIT_MODES else im.convert("L")
    if im.format in _LOSSLESS and gray.getextrema() == (0, 1):
        # A lossless 0/1 label image (numpy's bool saved as-is): 1 is the object. Never applied
        # to JPEG/WebP, whose compression noise on an empty mask is exactly 0s and 1s.
        return gray.point([0] + [255] * 255).convert("1", dither=Image.Dither.NONE)
    return gray.convert("1", dither=Image.Dither.NONE)


def encode_png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def normalize_mask(
    data: bytes, width: int, height: int, *, what: str, provider: str
) -> NormalizedMask:
    """Our copy of a mask: a 1-bit PNG at exactly (width, height), its area and bounding box.

    An engine may send the mask at another size than the image (half size, another aspect): it is
    stretched to the image's size with nearest-neighbour, so a mask pixel stays a mask pixel and
    no grey edge appears. EXIF orientation is not applied: masks are computed on the upright
    image we sent, and mask files carry no orientation. Raises ArtifactError (permanent).
    """
    width, height = check_size(width, height, what)
    im = open_untrusted(data, what, f" from {provider}" if provider else "")
    with im:
        mask = binarize(im)
    if mask.size != (width, height):
        if abs(mask.width / mask.height - width / height) > 0.02 * (width / height):
            logger.debug(
                "%s is %dx%d for a %dx%d image (another aspect ratio); stretched it",
                what,
                mask.width,
                mask.height,
                width,
                height,
            )
        mask = mask.resize((width, height), NEAREST)
    area = mask.histogram()[255]  # mode "1" histograms have 256 bins: 0 and 255 are used
    found = mask.getbbox()
    bbox = (found[0], found[1], found[2], found[3]) if found else None
    return NormalizedMask(png=encode_png(mask), area=area, bbox=bbox)


def box_to_pixels(
    box_norm: tuple[float, float, float, float] | list[float], width: int, height: int
) -> tuple[int, int, int, int]:
    """[cx, cy, w, h] normalized to 0-1 -> pixel [x_min, y_min, x_max, y_max] of the image the
    person sees (after EXIF orientation: use the image's displayed width and height), clamped to
    the image. Raises ValueError for anything but 4 finite numbers."""
    if not isinstance(box_norm, list | tuple) or len(box_norm) != 4:
        raise ValueError(f"a box is 4 numbers [cx, cy, w, h], not {box_norm!r:.60}")
    numbers = [finite_number(v) for v in box_norm]
    if any(n is None for n in numbers):
        raise ValueError(f"a box is 4 finite numbers, not {box_norm!r:.60}")
    cx, cy, w, h = (n for n in numbers if n is not None)

    def clamp(value: float, limit: int) -> int:
        return min(limit, max(0, round(value)))

    x_min = clamp((cx - w / 2) * width, width)
    y_min = clamp((cy - h / 2) * height, height)
    x_max = clamp((cx + w / 2) * width, width)
    y_max = clamp((cy + h / 2) * height, height)
    return (x_min, y_min, max(x_min, x_max), max(y_min, y_max))


def finite_number(value: object) -> float | None:
    """A finite int/float as float; None for bools, text, NaN, infinities and everything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too big for a float
        return None
    return number if math.isfinite(number) else None
