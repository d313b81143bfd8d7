"""Masks an engine hands back made our own (imaging.masks): downloading them (data: URIs,
HTTP with retries and the SSRF guard), normalising them, and their boxes. Real bytes and real
sockets on 127.0.0.1 (tests/image_server.py plus a small scripted server below); nothing of ours
is mocked. A tripwire on socket.create_connection fails any test that tries to reach a
non-loopback address."""

from __future__ import annotations

import base64
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image, ImageDraw

from segmentation.engines import get as get_engine
from segmentation.engines.runflow.output import parse_output
from segmentation.imaging.intake import intake_bytes
from segmentation.imaging.masks import ArtifactError, NormalizedMask, box_to_pixels
from segmentation.imaging.masks import normalize_mask as normalize
from segmentation.imaging.render import colour_for, render_overlay, render_thumbnail
from tests.factories import decode_image, encode_image, mask_ellipse
from tests.image_server import ImageServer
from tests.sample_images import IMAGES

BAD = IMAGES / "bad"


# --- helpers --------------------------------------------------------------------------------------


def download(url: str, *, what: str) -> bytes:
    """A mask as the Runflow engine downloads it: its own origin (RUNFLOW_BASE_URL) trusted."""
    return get_engine("runflow").download(url, what=what)


def normalize_mask(data: bytes, width: int, height: int, *, what: str) -> NormalizedMask:
    return normalize(data, width, height, what=what, provider="Runflow")


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


PNG_SMALL = encode_image(mask_ellipse((40, 30), (5, 5, 30, 25)))


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


def test_artifact_error_shape() -> None:
    exc = ArtifactError("Runflow gave no link for mask 2.", True)
    assert (exc.message, exc.permanent, exc.code, str(exc)) == (
        "Runflow gave no link for mask 2.",
        True,
        "error",
        "Runflow gave no link for mask 2.",
    )
    assert ArtifactError("x", permanent=False, code="timeout").permanent is False


# --- data: URIs -----------------------------------------------------------------------------------


def test_data_uri_is_decoded_without_the_network(connections: list) -> None:
    b64 = base64.b64encode(PNG_SMALL).decode()
    assert download(f"data:image/png;base64,{b64}", what="mask 0") == PNG_SMALL
    # Line-wrapped, unpadded, URL-safe, odd casing: all legal in the wild.
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)).rstrip("=")
    assert download(f"DATA:Image/PNG;BASE64,{wrapped}", what="mask 0") == PNG_SMALL
    urlsafe = base64.urlsafe_b64encode(PNG_SMALL).decode()
    assert download(f"data:image/png;base64,{urlsafe}", what="mask 0") == PNG_SMALL
    assert connections == []


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("data:text/plain;base64,aGVsbG8=", "not_image"),
        ("data:;base64,aGVsbG8=", "not_image"),
        ("data:image/png;base64," + base64.b64encode(b"hello, not a png").decode(), "not_image"),
        ("data:image/png;base64,<html>", "bad_data_uri"),
        ("data:image/png;base64,!!!!", "bad_data_uri"),
        ("data:image/png;base64", "bad_data_uri"),
        ("data:image/png;base64,", "empty"),
        ("data:image/png," + "%3Chtml%3E", "web_page"),
    ],
)
def test_bad_data_uris_are_permanent(uri: str, code: str) -> None:
    exc = refused(uri)
    assert (exc.code, exc.permanent) == (code, True)
    assert "mask 3" in exc.message


def test_data_uri_over_the_limit(settings) -> None:
    settings.SAM3WEB_ARTIFACT_MAX_BYTES = 1000
    big = encode_image(Image.effect_noise((64, 64), 50).convert("L"))
    assert len(big) > 1000
    exc = refused("data:image/png;base64," + base64.b64encode(big).decode())
    assert (exc.code, exc.permanent) == ("too_large", True)
    assert "1,000 bytes" in exc.message


# --- download over HTTP ---------------------------------------------------------------------------


def test_download_from_runflow_on_loopback_is_trusted(runflow: ScriptedServer, settings) -> None:
    """Runflow's own origin works on 127.0.0.1 without any allow-private switch."""
    assert settings.SAM3WEB_FETCH_ALLOW_PRIVATE is False
    url = runflow.add("/files/m0.png", (200, PNG_SMALL, "image/png"))
    assert download(url, what="mask 0") == PNG_SMALL
    assert runflow.hits["/files/m0.png"] == 1


def test_404_is_permanent_and_not_retried(runflow: ScriptedServer) -> None:
    exc = refused(runflow.url("/files/gone.png"))
    assert exc.permanent is True
    assert exc.message == "Runflow's link for mask 3 has expired (HTTP 404)."
    assert runflow.hits["/files/gone.png"] == 1


@pytest.mark.parametrize(
    ("status", "permanent"), [(403, True), (410, True), (400, True), (429, False)]
)
def test_4xx_is_never_retried(runflow: ScriptedServer, status: int, permanent: bool) -> None:
    url = runflow.add("/f.png", (status, b"no", "text/plain"))
    exc = refused(url)
    assert (exc.permanent, exc.code) == (permanent, "http_status")
    assert f"HTTP {status}" in exc.message
    assert runflow.hits["/f.png"] == 1


def test_500_then_ok_is_retried(runflow: ScriptedServer) -> None:
    url = runflow.add("/f.png", (500, b"oops", "text/plain"), (200, PNG_SMALL, "image/png"))
    assert download(url, what="mask 0") == PNG_SMALL
    assert runflow.hits["/f.png"] == 2


def test_500_always_gives_up_after_three_tries_and_is_not_permanent(
    runflow: ScriptedServer,
) -> None:
    url = runflow.add("/f.png", (503, b"busy", "text/plain"))
    exc = refused(url, what="the preview")
    assert (exc.permanent, exc.code) == (False, "http_status")
    assert exc.message == "Runflow's storage failed to send the preview (HTTP 503)."
    assert runflow.hits["/f.png"] == 3


def test_backoff_is_short_and_exponential(runflow: ScriptedServer, settings) -> None:
    settings.SAM3WEB_ARTIFACT_BACKOFF = 0.2
    url = runflow.add("/f.png", (500, b"oops", "text/plain"))
    started = time.monotonic()
    refused(url)
    assert 0.6 <= time.monotonic() - started < 2.0  # 0.2 + 0.4 between three tries


def test_connection_refused_is_retried_and_not_permanent(settings) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    settings.RUNFLOW_BASE_URL = f"http://127.0.0.1:{port}"
    exc = refused(f"http://127.0.0.1:{port}/m.png")
    assert (exc.permanent, exc.code) == (False, "network")


def test_html_page_is_refused_as_permanent(runflow_images: ImageServer) -> None:
    """Our rule: download sniffs the body and refuses anything that is not an image, so an HTML
    page never reaches storage; it says so ("a web page") and is permanent."""
    exc = refused(runflow_images.url("/page"))
    assert (exc.permanent, exc.code) == (True, "web_page")
    assert exc.message == "Runflow's link for mask 3 gave a web page, not an image."
    # Judged by content, not by Content-Type: HTML labelled image/png is refused too...
    exc = refused(runflow_images.url("/images/bad/html-as-png.png"))
    assert (exc.permanent, exc.code) == (True, "web_page")
    # ...and a real image labelled text/html is fine.
    jpeg = (IMAGES / "cat.jpg").read_bytes()
    assert download(runflow_images.url("/images/cat.jpg?type=text/html"), what="x") == jpeg


def test_text_file_is_not_an_image(runflow_images: ImageServer) -> None:
    exc = refused(runflow_images.url("/images/bad/not-an-image.jpg"))
    assert (exc.permanent, exc.code) == (True, "not_image")
    assert "not an image" in exc.message


@pytest.mark.parametrize("path", ["/silent", "/stall", "/trickle?interval=0.05"])
def test_a_hanging_server_is_stopped_by_the_timeout(
    runflow_images: ImageServer, settings, path: str
) -> None:
    settings.SAM3WEB_ARTIFACT_TIMEOUT = 1.0
    started = time.monotonic()
    exc = refused(runflow_images.url(path))
    elapsed = time.monotonic() - started
    assert (exc.permanent, exc.code) == (False, "timeout")
    assert (
        exc.message == "Downloading mask 3 from Runflow took longer than 1 second, so we stopped."
    )
    assert elapsed < 1.6, elapsed


def test_silence_is_retried_within_the_timeout(runflow_images: ImageServer, settings) -> None:
    """Each wait gets a third of the budget, so a server that goes silent once is tried again."""
    settings.SAM3WEB_ARTIFACT_TIMEOUT = 1.5
    refused(runflow_images.url("/silent"))
    assert len([r for r in runflow_images.requests if r.path == "/silent"]) >= 2


@pytest.mark.parametrize("length", ["none", "true"])
def test_too_big_is_permanent(runflow_images: ImageServer, settings, length: str) -> None:
    settings.SAM3WEB_ARTIFACT_MAX_BYTES = 100_000
    exc = refused(runflow_images.url(f"/big?bytes=5000000&length={length}"))
    assert (exc.permanent, exc.code) == (True, "too_large")
    assert exc.message == "Runflow's file for mask 3 is larger than the 100,000 bytes limit."
    assert len(runflow_images.requests) == 1


def test_default_limits() -> None:
    from sam3web import settings as defaults

    assert defaults.SAM3WEB_ARTIFACT_TIMEOUT == 30.0
    assert defaults.SAM3WEB_ARTIFACT_MAX_BYTES == 50 * 1024 * 1024
    assert defaults.SAM3WEB_ARTIFACT_BACKOFF == 0.5


def test_private_address_is_refused_for_a_non_runflow_host(image_server: ImageServer) -> None:
    image_server.reset()
    exc = refused(image_server.url("/images/cat.jpg"))
    assert (exc.permanent, exc.code) == (True, "blocked_address")
    assert "private or local network address (127.0.0.1)" in exc.message
    assert image_server.requests == []  # refused before connecting


def test_trust_is_for_runflows_exact_origin(image_server: ImageServer, settings) -> None:
    """Same IP, another port; or the same port by another name: not Runflow, so refused."""
    image_server.reset()
    settings.RUNFLOW_BASE_URL = f"http://127.0.0.1:{image_server.port + 1}"
    assert refused(image_server.url("/images/cat.jpg")).code == "blocked_address"
    settings.RUNFLOW_BASE_URL = image_server.url("")
    assert refused(image_server.url("/images/cat.jpg", host="localhost")).code == "blocked_address"
    settings.RUNFLOW_BASE_URL = image_server.url("").replace("http:", "https:")
    assert refused(image_server.url("/images/cat.jpg")).code == "blocked_address"
    assert image_server.requests == []


def test_allow_private_lets_other_local_hosts_through(image_server: ImageServer, settings) -> None:
    settings.SAM3WEB_FETCH_ALLOW_PRIVATE = True
    assert download(image_server.url("/images/cat.jpg"), what="x")[:3] == b"\xff\xd8\xff"


def test_redirects_are_followed_and_rechecked(runflow_images: ImageServer) -> None:
    data = download(runflow_images.url("/chain/2?final=/images/coins.png"), what="mask 0")
    assert data == (IMAGES / "coins.png").read_bytes()
    # Runflow's origin redirecting to another private host: that hop is checked and refused.
    other = runflow_images.url("/images/cat.jpg", host="localhost")
    exc = refused(runflow_images.url(f"/redirect?to={other}"))
    assert (exc.permanent, exc.code) == (True, "blocked_address")
    assert exc.message.endswith("(localhost), so we did not download it.")
    assert refused(runflow_images.url("/loop")).code == "redirects"
    assert refused(runflow_images.url("/redirect?to=file:///etc/passwd")).code == "bad_url"


@pytest.mark.parametrize("url", ["", "   ", "ftp://x.test/m.png", "https://", "/m.png", None])
def test_unusable_urls_are_permanent(url: object) -> None:
    exc = refused(url)  # type: ignore[arg-type]
    assert exc.permanent is True


def test_ingest_a_whole_run(runflow: ScriptedServer) -> None:
    """parse_output -> download -> normalize_mask -> render_overlay -> render_thumbnail, with
    half-size masks served by 'Runflow' on 127.0.0.1."""
    width, height = 200, 100
    boxes = [(10, 10, 60, 50), (50, 20, 90, 45)]
    for i, box in enumerate(boxes):
        runflow.add(f"/m{i}.png", (200, encode_image(mask_ellipse((100, 50), box)), "image/png"))
    output = {
        "model_data": {
            "masks": [{"url": runflow.url(f"/m{i}.png")} for i in range(2)],
            "scores": [0.9, 0.8],
        }
    }
    parsed = parse_output(output)
    masks = [
        normalize_mask(download(ref.url, what=f"mask {ref.index}"), width, height, what="m")
        for ref in parsed.masks
        if ref.url
    ]
    assert [m.bbox for m in masks] == [(20, 20, 122, 100), (100, 40, 182, 92)]
    overlay = render_overlay(((m.png, colour_for(i)) for i, m in enumerate(masks)), width, height)
    thumb = decode_image(
        render_thumbnail(encode_image(Image.new("RGB", (width, height), "white")), overlay)
    )
    assert thumb.size == (200, 100)  # never enlarged


# --- normalize_mask -------------------------------------------------------------------------------


def check_mask(mask: NormalizedMask, size: tuple[int, int]) -> Image.Image:
    im = decode_image(mask.png)
    assert im.format == "PNG" and im.mode == "1" and im.size == size
    assert set(im.convert("L").tobytes()) <= {0, 255}
    assert mask.area == object_pixels(im)
    assert mask.bbox == im.getbbox()
    return im


def test_l_mask_at_the_image_size() -> None:
    source = mask_ellipse((64, 48), (10, 5, 40, 30))
    mask = normalize_mask(encode_image(source), 64, 48, what="mask 0")
    im = check_mask(mask, (64, 48))
    assert mask.area == object_pixels(source) > 0
    assert mask.bbox == (10, 5, 41, 31)  # max exclusive
    assert im.convert("L").tobytes() == source.tobytes()


def test_threshold_is_above_127() -> None:
    source = Image.new("L", (4, 1))
    source.putdata([126, 127, 128, 255])
    mask = normalize_mask(encode_image(source), 4, 1, what="m")
    assert (mask.area, mask.bbox) == (2, (2, 0, 4, 1))


def test_rgba_mask_uses_its_alpha() -> None:
    """White everywhere, the object only in alpha: the colour alone would be all object."""
    source = mask_ellipse((64, 48), (10, 5, 40, 30), mode="RGBA")
    mask = normalize_mask(encode_image(source), 64, 48, what="m")
    check_mask(mask, (64, 48))
    assert mask.area == object_pixels(source.getchannel("A"))
    assert mask.bbox == (10, 5, 41, 31)
    la = normalize_mask(
        encode_image(mask_ellipse((64, 48), (10, 5, 40, 30), mode="LA")), 64, 48, what="m"
    )
    assert (la.area, la.bbox) == (mask.area, mask.bbox)


def test_opaque_rgba_mask_uses_its_grey_value() -> None:
    source = mask_ellipse((64, 48), (10, 5, 40, 30)).convert("RGBA")  # alpha 255 everywhere
    mask = normalize_mask(encode_image(source), 64, 48, what="m")
    assert (mask.area, mask.bbox) == (object_pixels(source), (10, 5, 41, 31))


def test_palette_one_bit_and_transparency_key_masks() -> None:
    source = mask_ellipse((64, 48), (10, 5, 40, 30))
    expected = object_pixels(source)
    for im in (source.convert("1"), source.convert("P"), source.convert("RGB")):
        assert normalize_mask(encode_image(im), 64, 48, what="m").area == expected
    # A palette PNG whose background colour is transparent (tRNS): alpha decides.
    keyed = Image.new("P", (64, 48), 0)
    keyed.putpalette([0, 0, 0, 255, 255, 255])
    ImageDraw.Draw(keyed).rectangle((8, 8, 17, 17), fill=1)
    mask = normalize_mask(encode_image(keyed, transparency=0), 64, 48, what="m")
    assert (mask.area, mask.bbox) == (100, (8, 8, 18, 18))


def test_zero_one_label_png_counts_ones_as_object() -> None:
    source = Image.new("L", (10, 10), 0)
    ImageDraw.Draw(source).rectangle((2, 3, 4, 6), fill=1)
    mask = normalize_mask(encode_image(source), 10, 10, what="m")
    assert (mask.area, mask.bbox) == (12, (2, 3, 5, 7))


def test_half_size_mask_is_resized_exactly() -> None:
    small = mask_ellipse((32, 24), (4, 2, 20, 15))
    mask = normalize_mask(encode_image(small), 64, 48, what="m")
    check_mask(mask, (64, 48))
    # Nearest-neighbour at exactly 2x: every pixel becomes a 2x2 block.
    assert mask.area == 4 * object_pixels(small)
    drawn = small.getbbox()
    assert drawn is not None
    x0, y0, x1, y1 = drawn
    assert mask.bbox == (2 * x0, 2 * y0, 2 * x1, 2 * y1)


def test_mask_at_another_aspect_is_stretched_to_the_image() -> None:
    small = Image.new("L", (100, 100), 0)
    ImageDraw.Draw(small).rectangle((0, 0, 49, 99), fill=255)  # the left half
    mask = normalize_mask(encode_image(small), 300, 451, what="m")
    check_mask(mask, (300, 451))
    assert (mask.area, mask.bbox) == (150 * 451, (0, 0, 150, 451))


def test_empty_mask() -> None:
    mask = normalize_mask(encode_image(Image.new("L", (64, 48), 0)), 64, 48, what="m")
    assert (mask.area, mask.bbox) == (0, None)
    check_mask(mask, (64, 48))
    full = normalize_mask(encode_image(Image.new("L", (64, 48), 255)), 64, 48, what="m")
    assert (full.area, full.bbox) == (64 * 48, (0, 0, 64, 48))


def test_jpeg_mask_with_compression_noise_is_thresholded() -> None:
    source = mask_ellipse((256, 192), (40, 30, 200, 150))
    jpeg = encode_image(source, "JPEG", quality=40)
    noisy = decode_image(jpeg)
    assert set(noisy.tobytes()) - {0, 255}, "the JPEG should carry compression noise"
    mask = normalize_mask(jpeg, 256, 192, what="m")
    check_mask(mask, (256, 192))
    assert abs(mask.area - object_pixels(source)) / object_pixels(source) < 0.01
    assert mask.bbox is not None
    assert all(abs(a - b) <= 1 for a, b in zip(mask.bbox, (40, 30, 201, 151), strict=True))
    # An empty JPEG mask is noise of 0s and 1s at most: still empty (no 0/1 label guessing).
    empty = Image.new("L", (64, 64), 0)
    empty.putpixel((5, 5), 3)
    assert normalize_mask(encode_image(empty, "JPEG", quality=40), 64, 64, what="m").area == 0


def test_16_bit_mask() -> None:
    source = Image.new("I;16", (10, 10), 0)
    ImageDraw.Draw(source).rectangle((1, 1, 3, 3), fill=65535)
    mask = normalize_mask(encode_image(source), 10, 10, what="m")
    assert (mask.area, mask.bbox) == (9, (1, 1, 4, 4))


@pytest.mark.parametrize("fmt", ["WEBP", "GIF"])
def test_webp_and_gif_masks(fmt: str) -> None:
    source = mask_ellipse((64, 48), (10, 5, 40, 30))
    mask = normalize_mask(
        encode_image(source, fmt, lossless=True) if fmt == "WEBP" else encode_image(source, fmt),
        64,
        48,
        what="m",
    )
    assert (mask.area, mask.bbox) == (object_pixels(source), (10, 5, 41, 31))


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        ((BAD / "not-an-image.jpg").read_bytes(), "not_image"),
        ((BAD / "html-as-png.png").read_bytes(), "web_page"),
        ((BAD / "script.svg").read_bytes(), "not_image"),
        ((BAD / "truncated.jpg").read_bytes(), "damaged"),
        (encode_image(Image.new("L", (8, 8)), "BMP"), "not_image"),
        (encode_image(Image.new("L", (8, 8)), "TIFF"), "not_image"),
    ],
)
def test_not_an_image_is_permanent(data: bytes, code: str) -> None:
    exc = mask_refused(data)
    assert (exc.code, exc.permanent) == (code, True)
    assert exc.message.startswith("Mask 3 from Runflow is ")


def test_bomb_is_refused_before_decoding() -> None:
    data = (BAD / "bomb-30000x30000.png").read_bytes()
    started = time.process_time()
    exc = mask_refused(data)
    assert time.process_time() - started < 0.2  # decoding 900 MP would take seconds
    assert (exc.code, exc.permanent) == ("too_many_pixels", True)
    assert exc.message == (
        "Mask 3 from Runflow is 30,000×30,000 pixels, more than the 50-megapixel limit."
    )
    assert mask_refused((BAD / "huge-header-only.png").read_bytes()).code == "too_many_pixels"


def test_pixel_limit_setting_applies(settings) -> None:
    settings.SAM3WEB_MAX_IMAGE_PIXELS = 1000
    assert mask_refused(encode_image(Image.new("L", (40, 40))), 10, 10).code == "too_many_pixels"
    assert mask_refused(encode_image(Image.new("L", (10, 10))), 40, 40).code == "too_many_pixels"


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, -1), (10.0, 10), (True, 10)])
def test_nonsense_target_size(width: object, height: object) -> None:
    assert mask_refused(PNG_SMALL, width, height).code == "bad_size"  # type: ignore[arg-type]


def test_32_masks_of_1024_are_fast() -> None:
    data = encode_image(mask_ellipse((1024, 1024), (100, 200, 800, 900)))
    started = time.process_time()
    for i in range(32):
        normalize_mask(data, 1024, 1024, what=f"mask {i}")
    assert time.process_time() - started < 1.0


# --- box_to_pixels --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        ((0.5, 0.5, 0.5, 0.5), (200, 100), (50, 25, 150, 75)),
        ((0.5, 0.5, 1.0, 1.0), (451, 300), (0, 0, 451, 300)),
        ((0.05, 0.95, 0.3, 0.3), (100, 100), (0, 80, 20, 100)),  # clamped at two edges
        ((1.5, 0.5, 0.2, 0.2), (100, 100), (100, 40, 100, 60)),  # entirely past the right edge
        ((-0.5, -0.5, 0.2, 0.2), (100, 100), (0, 0, 0, 0)),
        ([0.25, 0.25, 0.0, 0.0], (100, 100), (25, 25, 25, 25)),
    ],
)
def test_box_to_pixels(box: tuple, size: tuple[int, int], expected: tuple) -> None:
    assert box_to_pixels(box, *size) == expected


def test_box_on_an_exif_rotated_portrait_uses_the_upright_size() -> None:
    """cat-exif-rotated.jpg is stored 451x300 with orientation 6: people (and SAM 3, which gets
    our upright copy) see 300x451. Boxes are normalized to that."""
    upright = intake_bytes((IMAGES / "cat-exif-rotated.jpg").read_bytes())
    assert (upright.width, upright.height) == (300, 451)
    box = box_to_pixels((0.5, 0.25, 0.4, 0.2), upright.width, upright.height)
    assert box == (90, 68, 210, 158)
    assert box_to_pixels((0.5, 0.5, 1, 1), upright.width, upright.height) == (0, 0, 300, 451)


@pytest.mark.parametrize("box", [(0.5, 0.5, 0.2), (0.5, math.nan, 0.2, 0.2), "abcd", None])
def test_box_to_pixels_refuses_nonsense(box: object) -> None:
    with pytest.raises(ValueError):
        box_to_pixels(box, 100, 100)  # type: ignore[arg-type]
