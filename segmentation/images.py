"""Image intake: everything that turns bytes from a person (an upload or a pasted URL) into an
image we are willing to store, show and send to SAM 3.

Two halves:

* ``intake_bytes`` decides by content (never by file name or Content-Type) whether the bytes are a
  JPEG, PNG, WebP, GIF or AVIF we can fully decode, refuses decompression bombs from the header
  before a single pixel is decoded, applies EXIF orientation, and re-encodes only when browsers
  or the model could not be expected to show the original the way the person sees it.
* ``fetch_url`` downloads a URL server-side without becoming an SSRF hole: every connection,
  including every redirect hop, goes through a network backend that resolves the host itself,
  refuses non-public addresses and then connects to exactly the address it checked, so DNS
  rebinding cannot swap in a private address between the check and the connect. A single
  deadline covers DNS, connect, TLS and every read.

Settings are read at call time, so ``override_settings`` works in tests:
``SAM3WEB_MAX_IMAGE_BYTES``, ``SAM3WEB_MAX_IMAGE_PIXELS``, ``SAM3WEB_FETCH_TIMEOUT``,
``SAM3WEB_FETCH_MAX_REDIRECTS`` and ``SAM3WEB_FETCH_ALLOW_PRIVATE``. The last one is normally a
bool (True: any address may be fetched, for tests against a local server); it may also be a list
of addresses or networks (``["127.0.0.1"]``) that are allowed in addition to public ones, which
lets tests prove that a redirect hop to any *other* private address is still refused.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import ipaddress
import logging
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
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
    WebPImagePlugin,  # noqa: F401
)

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS_TEXT = "JPEG, PNG, WebP, GIF or AVIF"
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
# The only Pillow parsers we ever run on untrusted bytes. MPO is reached through JPEG's factory.
_OPEN_ORDER = ("JPEG", "PNG", "GIF", "WEBP", "AVIF")
# Modes every browser and image library shows as-is; anything else is converted.
_DISPLAYABLE_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})
_HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_JPEG_QUALITY = 95
# EXIF orientation -> the transposition that shows the image upright: the same table as
# ImageOps.exif_transpose. We apply it directly because exif_transpose also rewrites the EXIF and
# XMP blobs (which can fail on broken metadata) and we drop EXIF from re-encoded copies anyway.
_EXIF_TRANSPOSE = {
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


@dataclass(frozen=True)
class IntakeResult:
    data: bytes  # what to store and send: the original bytes unless we had to re-encode
    content_type: str  # image/jpeg | image/png | image/webp | image/gif | image/avif
    extension: str  # jpg | png | webp | gif | avif
    width: int  # as the person sees it, after EXIF orientation
    height: int
    converted: bool  # True when data is our re-encoded copy rather than the original bytes
    source_format: str  # Pillow's name for the original: JPEG, MPO, PNG, GIF, WEBP, AVIF
    sha256: str  # hex digest of data


# --- messages -----------------------------------------------------------------------------------


def _size_text(n: int) -> str:
    """A byte count for people: MiB for the real limits, plain bytes for tiny test limits."""
    if n >= 100 * 1024:
        mib = n / (1024 * 1024)
        return f"{mib:.1f}".removesuffix(".0") + " MiB"
    return f"{n:,} bytes"


def _too_large(limit: int, *, from_url: bool = False) -> ImageRejected:
    what = "The image at that link" if from_url else "This file"
    return ImageRejected(f"{what} is larger than the {_size_text(limit)} limit.", "too_large")


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
MSG_URL_WEB_PAGE = "The URL returned a web page, not an image."


# --- intake -------------------------------------------------------------------------------------


def intake_bytes(data: bytes) -> IntakeResult:
    """Check and normalise an image given as bytes. Raises ImageRejected, and nothing else."""
    data = bytes(data)  # also accepts bytearray/memoryview; a no-op for bytes
    max_bytes = settings.SAM3WEB_MAX_IMAGE_BYTES
    max_pixels = settings.SAM3WEB_MAX_IMAGE_PIXELS
    # _open_header skips Image.open's bomb check, so Pillow's own limit (89 MP unless someone
    # changed it) is applied here as a ceiling: a larger setting cannot switch it off.
    if Image.MAX_IMAGE_PIXELS is not None:
        max_pixels = min(max_pixels, Image.MAX_IMAGE_PIXELS)
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
            return _intake(data, max_pixels)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(None, max_pixels) from exc
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


def _intake(data: bytes, max_pixels: int) -> IntakeResult:
    im = _open_header(data)
    with im:
        # Only the header has been read so far: refuse bombs before any pixel is decoded.
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageRejected(MSG_NO_PIXELS, "no_pixels")
        if width * height > max_pixels:
            raise _too_many_pixels((width, height), max_pixels)
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
        try:
            return _normalise(im, data)
        except (ImageRejected, Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise
        except Exception as exc:
            # The image decoded, so this is odd metadata or an encoder corner case; still the
            # person gets a clear answer rather than a 500.
            logger.warning("could not normalise image", exc_info=True)
            raise ImageRejected(MSG_CORRUPT, "corrupt") from exc


def _open_header(data: bytes) -> ImageFile.ImageFile:
    """Parse only the header, with only our five parsers.

    This is Image.open's own loop, minus two things: it tries no other formats (TIFF, EPS, PSD,
    ... parsers never see untrusted bytes), and it does not run Pillow's global bomb check
    (MAX_IMAGE_PIXELS) at open time, so an oversized image reaches our check with its
    dimensions known and the person is told its size.
    """
    prefix = data[:16]
    claimed = False
    for name in _OPEN_ORDER:
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
    raise _unreadable(data, claimed)


def _unreadable(data: bytes, claimed: bool) -> ImageRejected:
    """The most helpful refusal for bytes none of our parsers could open."""
    head = data[:4096]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n\f").lower()
    if text.startswith(b"<"):
        if b"<svg" in text and b"<html" not in text:
            return ImageRejected(MSG_SVG, "svg")
        if b"<html" in text or not text.startswith(b"<?xml"):  # XHTML starts with <?xml too
            return ImageRejected(MSG_WEB_PAGE, "web_page")
    if head[4:8] == b"ftyp":
        # ISO media: the major brand plus the compatible brands of the ftyp box.
        brands = head[8:64]
        if any(b in brands for b in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis")):
            return _not_supported("HEIC")
    if claimed:
        return ImageRejected(MSG_CORRUPT, "corrupt")
    for magic, name in (
        (b"BM", "BMP"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
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


def _orientation(im: Image.Image) -> int:
    """EXIF (or XMP) orientation 1-8; 1 for missing, unreadable or nonsense values."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # broken EXIF must not sink an image that decodes fine
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _normalise(im: ImageFile.ImageFile, data: bytes) -> IntakeResult:
    source_format = im.format or ""
    family = "JPEG" if source_format == "MPO" else source_format  # MPO is JPEG plus extras
    source_mode = im.mode
    icc = im.info.get("icc_profile") or None
    transparency = im.info.get("transparency")

    out: Image.Image = im
    if out.mode == "CMYK":
        # Adobe CMYK/YCCK JPEGs: browsers disagree on how (and whether) to show them. Pillow
        # already undoes Adobe's inversion; its conversion is the naive one (no ICC transform).
        out = out.convert("RGB")
    elif out.mode in _HIGH_BIT_MODES:
        out = _to_8bit_gray(out)
    elif out.mode not in _DISPLAYABLE_MODES:
        out = out.convert("RGBA" if "A" in out.mode or "a" in out.mode else "RGB")

    orientation = _orientation(im)
    if orientation != 1:
        out = out.transpose(_EXIF_TRANSPOSE[orientation])

    # GIF always becomes a PNG of its first frame: SAM 3 sees one frame, and so must the person.
    if out is im and family != "GIF":
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

    target = "JPEG" if family == "JPEG" and out.mode in ("L", "RGB") else "PNG"
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


def _to_8bit_gray(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grayscale -> 8-bit 'L', scaled rather than clipped.

    Integer data is shifted right by the fewest bits that fit its largest value into 8 bits:
    a full-range 16-bit image gets the usual >> 8, while 8-bit or 12-bit data stored in a
    16-bit container (common from scientific and camera tools, and how camera-16bit.png in the
    shared test images is made) keeps its contrast instead of turning black.
    """
    if im.mode == "F":
        lo, hi = im.getextrema()
        if lo >= 0 and hi <= 1:  # the usual 0..1 float convention
            scale, offset = 255.0, 0.0
        else:
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            offset = -lo * scale
        return im.point(lambda v: v * scale + offset).convert("L")
    im = im.convert("I")  # exact for I;16 variants
    lo, hi = im.getextrema()
    if lo >= 0 and hi <= 0xFFFF:
        shift = max(0, int(hi).bit_length() - 8)
        return im.point([v >> shift for v in range(0x10000)], "L")
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return im.point(lambda v: v * scale - lo * scale).convert("L")


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


# --- fetching -----------------------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Special-purpose IPv4 blocks that some Python versions still call global.
_ALSO_BLOCKED = (
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("192.88.99.0/24"),  # deprecated 6to4 relay anycast
)


def is_public_address(ip: str | IPAddress) -> bool:
    """True only for globally routable unicast addresses. IPv6 forms that embed an IPv4 address
    (IPv4-mapped, NAT64, 6to4) are judged by the embedded address; Teredo is refused outright."""
    try:
        addr = ip if isinstance(ip, IPAddress) else ipaddress.ip_address(str(ip).strip("[]"))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return is_public_address(addr.ipv4_mapped)
        if addr in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
        if addr.sixtofour is not None:
            return is_public_address(addr.sixtofour)
        if addr.teredo is not None or addr.is_site_local:
            return False
    elif any(addr in net for net in _ALSO_BLOCKED):
        return False
    return addr.is_global and not (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


def _address_policy() -> Callable[[IPAddress], bool]:
    """Which addresses may be fetched, from SAM3WEB_FETCH_ALLOW_PRIVATE at call time."""
    allow = getattr(settings, "SAM3WEB_FETCH_ALLOW_PRIVATE", False)
    if allow is True:
        return lambda addr: True
    if not allow:
        return is_public_address
    extra = [ipaddress.ip_network(str(item), strict=False) for item in allow]
    return lambda addr: (
        is_public_address(addr) or any(addr.version == net.version and addr in net for net in extra)
    )


def _timeout_error(seconds: float) -> ImageRejected:
    unit = "second" if seconds == 1 else "seconds"
    return ImageRejected(
        f"Downloading the image took longer than {seconds:g} {unit}, so we stopped.", "timeout"
    )


class _DeadlineStream(httpcore.NetworkStream):
    """Clamps every socket wait to the fetch's overall deadline, so a slow server cannot stretch
    a download past it, whatever the per-operation timeouts say."""

    def __init__(self, inner: httpcore.NetworkStream, backend: GuardedNetworkBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.time_left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._backend.time_left(timeout)
        )
        return _DeadlineStream(inner, self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedNetworkBackend(httpcore.SyncBackend):
    """An httpcore backend that resolves the host itself, refuses the connection if ANY resolved
    address is not allowed, and then connects to the checked address (never re-resolving), with
    every wait bounded by one overall deadline. TLS is unaffected: httpcore still verifies the
    certificate and sends SNI for the hostname of the request, not for the IP we connect to."""

    def __init__(
        self,
        *,
        allowed: Callable[[IPAddress], bool] = is_public_address,
        deadline: float | None = None,
        timeout_seconds: float = 0.0,
    ) -> None:
        self._allowed = allowed
        self._deadline = deadline
        self._timeout_seconds = timeout_seconds

    def time_left(self, timeout: float | None = None) -> float | None:
        """The smaller of timeout and the time to the deadline; raises once it has passed."""
        if self._deadline is None:
            return timeout
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _timeout_error(self._timeout_seconds)
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._resolve(host, port, self.time_left(timeout))
        for addr in addresses:
            if not self._allowed(addr):
                logger.warning("refused to fetch from %s (%s)", host, addr)
                raise ImageRejected(
                    f"The link points to a private or local network address ({host}), "
                    "so we will not fetch it.",
                    "blocked_address",
                )
        last_error: Exception | None = None
        for addr in addresses:  # like socket.create_connection, but over checked addresses only
            try:
                stream = super().connect_tcp(
                    str(addr),
                    port,
                    timeout=self.time_left(timeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream, self)
        assert last_error is not None
        raise last_error

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise ImageRejected("Fetching from a local socket is not allowed.", "blocked_address")

    def _resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        try:  # a literal IP needs no lookup (and the allowed check sees it exactly)
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        # getaddrinfo cannot be interrupted, so it runs in a daemon thread that we stop waiting
        # for at the deadline. It also turns '127.1', '0x7f000001' and '2130706433' into
        # 127.0.0.1 exactly as the connect would, so those are checked like any other address.
        box: dict[str, Any] = {}

        def lookup() -> None:
            try:
                box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except Exception as exc:  # gaierror, UnicodeError for odd names, ...
                box["error"] = exc

        worker = threading.Thread(target=lookup, name="sam3web-dns", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise _timeout_error(self._timeout_seconds)
        if "error" in box or not box.get("infos"):
            raise ImageRejected(
                f"Could not find the server {host}. Please check the link.", "unreachable"
            )
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _canon, sockaddr in box["infos"]:
            addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if addr not in addresses:
                addresses.append(addr)
        return addresses


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verified SSL context for every fetch: building one loads the CA bundle (~17 ms),
    which would otherwise be paid per URL (32 times for a run's masks). It is thread-safe."""
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool rebuilt on GuardedNetworkBackend."""

    def __init__(self, backend: GuardedNetworkBackend) -> None:
        ssl_context = shared_ssl_context()
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=4,
            max_keepalive_connections=2,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )


_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


def _check_url(raw: str) -> httpx.URL:
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


def fetch_url(url: str) -> bytes:
    """Download an image URL a person gave us, SSRF-safely. Raises ImageRejected."""
    return _fetch(url)[0]


def intake_url(url: str) -> IntakeResult:
    """fetch_url + intake_bytes, with a clearer message when the URL gave us a web page."""
    data, content_type = _fetch(url)
    try:
        return intake_bytes(data)
    except ImageRejected as exc:
        if exc.code in ("web_page", "not_image", "corrupt") and (
            content_type in ("text/html", "application/xhtml+xml")
            or data[:1024].lstrip()[:1] == b"<"
        ):
            raise ImageRejected(MSG_URL_WEB_PAGE, "web_page") from exc
        raise


def _fetch(url: str) -> tuple[bytes, str]:
    """The download behind fetch_url; also returns the (untrusted) Content-Type."""
    timeout = float(settings.SAM3WEB_FETCH_TIMEOUT)
    max_bytes = settings.SAM3WEB_MAX_IMAGE_BYTES
    max_redirects = settings.SAM3WEB_FETCH_MAX_REDIRECTS
    current = _check_url(url)
    deadline = time.monotonic() + timeout
    backend = GuardedNetworkBackend(
        allowed=_address_policy(), deadline=deadline, timeout_seconds=timeout
    )
    seen = {str(current)}
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "image/avif,image/webp,image/png,image/jpeg,image/gif;q=0.9,*/*;q=0.1",
        # Images are compressed already; asking for identity keeps compression bombs out.
        "Accept-Encoding": "identity",
    }
    # The transport is used directly rather than through httpx.Client: the client would parse
    # every Location header itself (and raise InvalidURL on 'javascript:...'), pick up proxy
    # settings, and keep cookies. Redirects are ours to judge, one hop at a time.
    timeouts = httpx.Timeout(timeout).as_dict()
    with GuardedTransport(backend) as transport:
        for _hop in range(max_redirects + 1):
            request = httpx.Request(
                "GET", current, headers=headers, extensions={"timeout": timeouts}
            )
            with _transport_errors(current.host, timeout):
                response = transport.handle_request(request)
                response.request = request
                try:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECT_CODES and location:
                        current = _redirect_target(current, location)
                        if str(current) in seen:
                            raise ImageRejected("The link redirects in a loop.", "redirects")
                        seen.add(str(current))
                        continue
                    if not response.is_success:
                        reason = f" {response.reason_phrase}" if response.reason_phrase else ""
                        raise ImageRejected(
                            f"The server answered HTTP {response.status_code}{reason} "
                            "instead of sending the image.",
                            "http_status",
                        )
                    content_type = response.headers.get("content-type", "")
                    body = _read_body(response, deadline, timeout, max_bytes)
                    return body, content_type.split(";", 1)[0].strip().lower()
                finally:
                    response.close()
    raise ImageRejected(
        f"The link redirected more than {max_redirects} times, so we stopped following it.",
        "redirects",
    )


def _redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    """The next hop, through the same checks as the URL the person gave."""
    try:
        target = str(current.join(location))
    except (httpx.InvalidURL, ValueError):
        _check_url(location)  # a clearer message if it is, say, a non-http scheme
        raise ImageRejected(
            "The link redirected to an address that is not valid.", "bad_url"
        ) from None
    return _check_url(target)


@contextlib.contextmanager
def _transport_errors(host: str, timeout: float) -> Iterator[None]:
    """httpx's transport errors as ImageRejected with a sentence a person can act on."""
    try:
        yield
    except httpx.TimeoutException:
        raise _timeout_error(timeout) from None
    except httpx.ConnectError as exc:
        if _caused_by(exc, ssl.SSLError):
            raise ImageRejected(
                f"Could not make a secure connection to {host} "
                "(its certificate could not be verified).",
                "unreachable",
            ) from None
        raise ImageRejected(f"Could not connect to {host}.", "unreachable") from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        raise ImageRejected(
            f"The connection to {host} broke off before the image was complete.",
            "unreachable",
        ) from None
    except httpx.HTTPError:
        logger.info("fetch failed", exc_info=True)
        raise ImageRejected(f"Could not download the image from {host}.", "unreachable") from None


def _read_body(response: httpx.Response, deadline: float, timeout: float, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes, from_url=True)  # no need to download it to know
    parts: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > max_bytes:  # Content-Length is a claim; the bytes are what count
            raise _too_large(max_bytes, from_url=True)
        if time.monotonic() > deadline:  # a server trickling bytes never trips a read timeout
            raise _timeout_error(timeout)
        parts.append(chunk)
    return b"".join(parts)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
