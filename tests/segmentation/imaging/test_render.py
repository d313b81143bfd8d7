"""Drawing masks (imaging.render): the palette, the overlay and the thumbnail."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image, ImageDraw

from segmentation.engines import get as get_engine
from segmentation.imaging.masks import ArtifactError, NormalizedMask
from segmentation.imaging.masks import normalize_mask as normalize
from segmentation.imaging.render import PALETTE, colour_for, render_overlay, render_thumbnail
from tests.image_server import ImageServer
from tests.pixels import colour_at
from tests.sample_images import IMAGES

BAD = IMAGES / "bad"


# --- helpers --------------------------------------------------------------------------------------


def download(url: str, *, what: str) -> bytes:
    """A mask as the Runflow engine downloads it: its own origin (RUNFLOW_BASE_URL) trusted."""
    return get_engine("runflow").download(url, what=what)


def normalize_mask(data: bytes, width: int, height: int, *, what: str) -> NormalizedMask:
    return normalize(data, width, height, what=what, provider="Runflow")


def encode(im: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def ellipse(size: tuple[int, int], box: tuple[int, int, int, int], mode: str = "L") -> Image.Image:
    """A white ellipse on black (or an opaque ellipse on transparent for RGBA/LA)."""
    if mode in ("RGBA", "LA"):
        im = Image.new(mode, size, (255, 255, 255, 0) if mode == "RGBA" else (255, 0))
        ImageDraw.Draw(im).ellipse(box, fill=(255, 255, 255, 255) if mode == "RGBA" else (255, 255))
        return im
    im = Image.new("L", size, 0)
    ImageDraw.Draw(im).ellipse(box, fill=255)
    return im.convert(mode) if mode != "L" else im


def object_pixels(im: Image.Image) -> int:
    """Ground truth: pixels > 127 in an L image, counted independently of the code under test."""
    return sum(1 for v in im.convert("L").tobytes() if v > 127)


def refused(url: str, what: str = "mask 3") -> ArtifactError:
    with pytest.raises(ArtifactError) as info:
        download(url, what=what)
    return info.value


def mask_refused(data: bytes, width: int = 64, height: int = 64) -> ArtifactError:
    with pytest.raises(ArtifactError) as info:
        normalize_mask(data, width, height, what="mask 3")
    return info.value


PNG_SMALL = encode(ellipse((40, 30), (5, 5, 30, 25)))


class ScriptedServer:
    """A tiny HTTP server whose answers per path are scripted: each request takes the next
    (status, body, content type) of its path; the last one repeats. ``hits`` counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, list[tuple[int, bytes, str]]] = {}
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server.lock:
                    server.hits[path] += 1
                    script = server.routes.get(path)
                    if not script:
                        status, body, ctype = 404, b"not found", "text/plain"
                    else:
                        status, body, ctype = script.pop(0) if len(script) > 1 else script[0]
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def add(self, path: str, *answers: tuple[int, bytes, str]) -> str:
        with self.lock:
            self.routes[path] = list(answers)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _artifact_settings(settings) -> None:
    settings.SAM3WEB_ARTIFACT_BACKOFF = 0.01
    settings.SAM3WEB_ARTIFACT_TIMEOUT = 5.0
    settings.SAM3WEB_FETCH_ALLOW_PRIVATE = False
    settings.RUNFLOW_BASE_URL = "https://api.runflow.io"


@pytest.fixture(autouse=True)
def _loopback_only(connections: list[tuple[str, int]]) -> None:
    """Tripwire (conftest's `connections`): no test here may connect anywhere but loopback."""


@pytest.fixture(scope="module")
def image_server() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def runflow(settings, scripted: ScriptedServer) -> ScriptedServer:
    """The scripted server is Runflow's origin, so it is trusted though it is on 127.0.0.1."""
    settings.RUNFLOW_BASE_URL = scripted.base_url
    return scripted


@pytest.fixture
def runflow_images(settings, image_server: ImageServer) -> ImageServer:
    image_server.reset()
    settings.RUNFLOW_BASE_URL = image_server.url("")
    return image_server


# --- palette --------------------------------------------------------------------------------------


def test_palette_is_tab10_in_order() -> None:
    tab10 = "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf".split()  # noqa: SIM905
    assert [tuple(bytes.fromhex(h)) for h in tab10] == PALETTE
    assert colour_for(0) == PALETTE[0] and colour_for(13) == PALETTE[3]


# --- overlay and thumbnail ------------------------------------------------------------------------


def test_overlay_colours_and_transparency() -> None:
    left = Image.new("L", (100, 50), 0)
    ImageDraw.Draw(left).rectangle((0, 0, 59, 49), fill=255)
    right = Image.new("L", (100, 50), 0)
    ImageDraw.Draw(right).rectangle((40, 0, 79, 49), fill=255)
    masks = [normalize_mask(encode(im), 100, 50, what="m") for im in (left, right)]
    consumed: list[int] = []

    def stream() -> Iterator[tuple[bytes, tuple[int, int, int]]]:
        for i, mask in enumerate(masks):
            consumed.append(i)
            yield mask.png, PALETTE[i]

    overlay = decode(render_overlay(stream(), 100, 50))
    assert consumed == [0, 1]
    assert (overlay.format, overlay.mode, overlay.size) == ("PNG", "RGBA", (100, 50))
    assert overlay.getpixel((10, 10)) == (*PALETTE[0], 128)
    assert overlay.getpixel((50, 10)) == (*PALETTE[1], 128)  # the later mask on top
    assert overlay.getpixel((70, 10)) == (*PALETTE[1], 128)
    assert colour_at(overlay, (90, 10))[3] == 0  # outside every mask: transparent
    assert overlay.getchannel("A").getbbox() == (0, 0, 80, 50)


def test_overlay_alpha_and_a_mask_at_another_size() -> None:
    half = encode(ellipse((50, 25), (0, 0, 24, 24)))  # half size: stretched to the canvas
    overlay = decode(render_overlay([(half, (1, 2, 3))], 100, 50, alpha=200))
    assert overlay.getpixel((24, 24)) == (1, 2, 3, 200)
    assert overlay.getpixel((99, 49)) == (0, 0, 0, 0)


def test_empty_overlay_is_transparent() -> None:
    overlay = decode(render_overlay(iter(()), 30, 20))
    assert overlay.size == (30, 20) and overlay.getchannel("A").getbbox() is None


def test_thumbnail_of_a_large_photo_with_overlay() -> None:
    photo = (IMAGES / "large-4032x3024.jpg").read_bytes()
    full = Image.new("L", (4032, 3024), 0)
    ImageDraw.Draw(full).rectangle((0, 0, 2015, 3023), fill=255)  # the left half
    mask = normalize_mask(encode(full), 4032, 3024, what="m")
    overlay = render_overlay([(mask.png, PALETTE[3])], 4032, 3024)
    started = time.process_time()
    thumb_bytes = render_thumbnail(photo, overlay)
    assert time.process_time() - started < 1.0
    thumb = decode(thumb_bytes)
    assert (thumb.format, thumb.mode, thumb.size) == ("JPEG", "RGB", (240, 180))
    plain = decode(render_thumbnail(photo, None))
    # Left half: the photo blended half and half with red; right half: the photo untouched.
    # (The tolerance is JPEG's: chroma subsampling smears colour across 2x2 blocks.)
    for x in (30, 60, 100):
        blended = [
            p * 127 / 255 + c * 128 / 255
            for p, c in zip(colour_at(plain, (x, 90)), PALETTE[3], strict=True)
        ]
        assert all(
            abs(a - b) <= 12 for a, b in zip(colour_at(thumb, (x, 90)), blended, strict=True)
        )
    for x in (140, 200):
        assert all(
            abs(a - b) <= 6
            for a, b in zip(colour_at(thumb, (x, 90)), colour_at(plain, (x, 90)), strict=True)
        )


def test_thumbnail_colour_is_the_palette_at_half_alpha() -> None:
    white = encode(Image.new("RGB", (400, 300), "white"))
    overlay = render_overlay([(encode(Image.new("L", (400, 300), 255)), PALETTE[3])], 400, 300)
    thumb = decode(render_thumbnail(white, overlay, size=(80, 60)))
    assert thumb.size == (80, 60)
    expected = [round(c * 128 / 255 + 255 * 127 / 255) for c in PALETTE[3]]
    assert all(abs(a - b) <= 4 for a, b in zip(colour_at(thumb, (40, 30)), expected, strict=True))


def test_thumbnail_keeps_aspect_and_follows_exif() -> None:
    thumb = decode(render_thumbnail((IMAGES / "cat-exif-rotated.jpg").read_bytes(), None))
    assert thumb.size == (120, 180)  # a portrait, as people see it
    thumb = decode(render_thumbnail((IMAGES / "cat.jpg").read_bytes(), None))
    assert thumb.size == (240, 160)
    for name in (
        "coffee-rgba.png",
        "coffee-palette.png",
        "camera-16bit.png",
        "cat-cmyk.jpg",
        "rocket.webp",
        "cat-animated.gif",
    ):
        assert decode(render_thumbnail((IMAGES / name).read_bytes(), None)).format == "JPEG"


def test_thumbnail_of_not_an_image() -> None:
    with pytest.raises(ArtifactError) as info:
        render_thumbnail((BAD / "not-an-image.jpg").read_bytes(), None)
    assert info.value.permanent is True
    with pytest.raises(ArtifactError) as info:
        render_thumbnail((BAD / "bomb-30000x30000.png").read_bytes(), None)
    assert info.value.code == "too_many_pixels"
