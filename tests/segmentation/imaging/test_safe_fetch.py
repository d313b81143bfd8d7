"""Fetching image URLs without becoming an SSRF hole (safe_fetch, mostly through intake_url),
against a real local HTTP server. Nothing of ours is mocked; the only patch is a tripwire on
socket.create_connection that fails a test the moment anything tries to connect to a
non-loopback address."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator

import pytest
from django.conf import settings

from segmentation.imaging.decode import (
    MSG_CORRUPT,
    MSG_EMPTY,
    MSG_NOT_IMAGE,
    MSG_SVG,
    MSG_URL_WEB_PAGE,
    ImageRejected,
)
from segmentation.imaging.intake import (
    USER_AGENT,
    check_url,
    intake_url,
)
from segmentation.imaging.safe_fetch import (
    FetchError,
    GuardedNetworkBackend,
    fetch,
    is_public_address,
)
from tests.image_server import ImageServer
from tests.sample_images import IMAGES

MiB = 1024 * 1024


def read(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


# A small, asymmetric photo: flips and rotations all give different pixels.


# --- the address check ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "240.0.0.1",
        "192.0.0.8",
        "198.18.0.1",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fe80::1",
        "fe80::1%1",
        "fc00::1",
        "fec0::1",
        "ff0e::1",
        "2001:db8::1",
        "not an address",
    ],
)
def test_non_public_addresses(ip: str) -> None:
    assert is_public_address(ip) is False


@pytest.mark.parametrize(
    "ip", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses(ip: str) -> None:
    assert is_public_address(ip) is True
    assert is_public_address(ipaddress.ip_address(ip)) is True


# --- fetching -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _server() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture
def server(_server: ImageServer) -> ImageServer:
    _server.reset()
    return _server


@pytest.fixture
def local(settings, connections: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Allow loopback fetches (the test server); everything else keeps its limits."""
    settings.SAM3WEB_FETCH_ALLOW_PRIVATE = True
    return connections


def fetch_refused(url: str) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        intake_url(url)
    return info.value


def test_good_image_end_to_end(server: ImageServer, local: list) -> None:
    result = intake_url(server.url("/images/cat.jpg"))
    assert result.data == read("cat.jpg") and result.converted is False
    assert (result.width, result.height) == (451, 300)
    [request] = server.requests
    assert request.headers["User-Agent"] == USER_AGENT == "sam3web/0.1 (+image fetch)"
    assert request.headers["Accept-Encoding"] == "identity"
    assert local == [("127.0.0.1", server.port)]


def fetched(url: str) -> bytes:
    """The bytes at ``url`` through safe_fetch alone, with the image intake's limits."""
    return fetch(
        check_url(url),
        check_url=check_url,
        timeout=settings.SAM3WEB_FETCH_TIMEOUT,
        max_bytes=settings.SAM3WEB_MAX_IMAGE_BYTES,
        headers={},
    ).body


def test_fetch_returns_the_bytes(server: ImageServer, local: list) -> None:
    assert fetched(server.url("/images/rocket.webp")) == read("rocket.webp")


def test_fetched_image_is_normalised_like_an_upload(server: ImageServer, local: list) -> None:
    result = intake_url(server.url("/images/cat-exif-rotated.jpg"))
    assert (result.width, result.height, result.converted) == (300, 451, True)


def test_content_type_is_not_trusted(server: ImageServer, local: list) -> None:
    assert intake_url(server.url("/images/cat.jpg?type=text/html")).content_type == "image/jpeg"


def test_html_page(server: ImageServer, local: list) -> None:
    assert fetch_refused(server.url("/page")).message == MSG_URL_WEB_PAGE
    # safe_fetch itself only downloads; judging the bytes is intake's job.
    assert fetched(server.url("/page")).startswith(b"<!doctype html>")


def test_html_served_as_png(server: ImageServer, local: list) -> None:
    assert fetch_refused(server.url("/images/bad/html-as-png.png")).message == MSG_URL_WEB_PAGE


def test_svg_by_url(server: ImageServer, local: list) -> None:
    assert fetch_refused(server.url("/images/bad/script.svg")).message == MSG_SVG


def test_text_by_url(server: ImageServer, local: list) -> None:
    assert fetch_refused(server.url("/images/bad/not-an-image.jpg")).message == MSG_NOT_IMAGE


@pytest.mark.parametrize("code", [404, 403, 500, 204])
def test_http_errors(server: ImageServer, local: list, code: int) -> None:
    exc = fetch_refused(server.url(f"/status/{code}"))
    if code == 204:  # a success with no body
        assert exc.message == MSG_EMPTY
    else:
        assert exc.code == "http_status" and f"HTTP {code}" in exc.message


def test_404_message(server: ImageServer, local: list) -> None:
    assert fetch_refused(server.url("/status/404")).message == (
        "The server answered HTTP 404 Not Found instead of sending the image."
    )


def test_redirect_chain_within_the_limit(server: ImageServer, local: list) -> None:
    assert intake_url(server.url("/chain/5")).data == read("cat.jpg")
    assert len(server.requests) == 6


def test_too_many_redirects(server: ImageServer, local: list) -> None:
    exc = fetch_refused(server.url("/chain/6"))
    assert exc.code == "redirects"
    assert exc.message == "The link redirected more than 5 times, so we stopped following it."
    assert len(server.requests) == 6


def test_redirect_limit_comes_from_settings(server: ImageServer, local: list, settings) -> None:
    settings.SAM3WEB_FETCH_MAX_REDIRECTS = 0
    assert intake_url(server.url("/chain/0")).width == 451
    assert fetch_refused(server.url("/chain/1")).code == "redirects"


@pytest.mark.parametrize("path", ["/loop", "/loop/a"])
def test_redirect_loop(server: ImageServer, local: list, path: str) -> None:
    exc = fetch_refused(server.url(path))
    assert exc.message == "The link redirects in a loop."


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_every_redirect_code_is_followed(server: ImageServer, local: list, code: int) -> None:
    target = server.url("/images/coffee.jpg")
    assert intake_url(server.url(f"/redirect?to={target}&code={code}")).width == 600


@pytest.mark.parametrize(
    "target",
    [
        "ftp://example.com/cat.jpg",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "gopher://127.0.0.1:70/",
    ],
)
def test_redirect_to_a_non_http_scheme_is_refused(
    server: ImageServer, local: list, target: str
) -> None:
    exc = fetch_refused(server.url(f"/redirect?to={target}"))
    assert exc.code == "bad_url" and "Only http:// and https://" in exc.message
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/cat.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.2:{port}/images/cat.jpg",  # loopback too, but not the allowed address
        "http://[::1]:{port}/images/cat.jpg",
        "http://0.0.0.0:{port}/images/cat.jpg",
        "http://127.1.2.3:{port}/images/cat.jpg",
    ],
)
def test_each_redirect_hop_is_checked(
    server: ImageServer, settings, connections: list, target: str
) -> None:
    # Only the test server's own address is allowed: the first hop goes through, and the
    # redirect to any other private address is refused before a connection is attempted.
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1/32"]
    exc = fetch_refused(server.url(f"/redirect?to={target.format(port=server.port)}"))
    assert exc.code == "blocked_address"
    assert connections == [("127.0.0.1", server.port)]
    assert len(server.requests) == 1


def test_the_allowed_address_itself_is_fetched(
    server: ImageServer, settings, connections: list
) -> None:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]
    target = server.url("/images/cat.jpg")
    assert intake_url(server.url(f"/redirect?to={target}")).width == 451


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/images/cat.jpg",
        "http://localhost:{port}/images/cat.jpg",  # a name that resolves to 127.0.0.1
        "http://LocalHost:{port}/images/cat.jpg",
        "http://127.1:{port}/images/cat.jpg",
        "http://0x7f000001:{port}/images/cat.jpg",
        "http://2130706433:{port}/images/cat.jpg",
        "http://0x7f.1:{port}/images/cat.jpg",
        "http://127.0.1:{port}/images/cat.jpg",
        "http://[::1]:{port}/images/cat.jpg",
        "http://[::ffff:127.0.0.1]:{port}/images/cat.jpg",
        "http://0.0.0.0:{port}/images/cat.jpg",
        "http://0:{port}/images/cat.jpg",
        "http://10.0.0.1/cat.jpg",
        "http://192.168.0.1/cat.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "https://10.0.0.1/cat.jpg",
    ],
)
def test_private_addresses_are_refused_before_connecting(
    server: ImageServer, connections: list, url: str
) -> None:
    exc = fetch_refused(url.format(port=server.port))
    assert exc.code == "blocked_address"
    assert "private or local network" in exc.message
    assert connections == []
    assert server.requests == []


def test_backend_refuses_a_name_that_resolves_to_loopback(
    server: ImageServer, connections: list
) -> None:
    with pytest.raises(FetchError) as info:
        GuardedNetworkBackend().connect_tcp("localhost", server.port)
    assert info.value.kind == "blocked"
    assert connections == []


def test_backend_connects_to_the_address_it_checked(server: ImageServer, connections: list) -> None:
    checked: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []

    def allowed(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, host: str) -> bool:
        checked.append(addr)
        return addr.is_loopback

    stream = GuardedNetworkBackend(allowed=allowed).connect_tcp("localhost", server.port)
    stream.close()
    assert checked and connections
    assert {host for host, _port in connections} <= {str(a) for a in checked}


def test_backend_enforces_its_deadline(server: ImageServer, connections: list) -> None:
    backend = GuardedNetworkBackend(allowed=lambda addr, host: True, deadline=time.monotonic() - 1)
    with pytest.raises(FetchError) as info:
        backend.connect_tcp("127.0.0.1", server.port)
    assert info.value.kind == "timeout"
    assert connections == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/cat.jpg", "Only http:// and https:// links can be fetched, not ftp:"),
        ("file:///etc/passwd", "not file: links"),
        ("data:image/png;base64,iVBORw0KGgo=", "not data: links"),
        ("javascript:alert(1)", "not javascript: links"),
        ("JavaScript:alert(1)", "not javascript: links"),
        ("gopher://example.com/", "not gopher: links"),
        ("example.com/cat.jpg", "The link must start with http:// or https://."),
        ("//example.com/cat.jpg", "The link must start with http:// or https://."),
        ("http:///cat.jpg", "The link has no server name in it."),
        ("", "Please give a link to an image."),
        ("   ", "Please give a link to an image."),
        ("http://[::1", "That does not look like a web address."),
        ("http://example.com/" + "a" * 2000, "The link is too long (over 2,000 characters)."),
    ],
)
def test_bad_urls(connections: list, url: str, message: str) -> None:
    exc = fetch_refused(url)
    assert exc.code == "bad_url" and message in exc.message
    assert connections == []


def test_slow_endless_body_is_stopped_by_the_deadline(
    server: ImageServer, local: list, settings
) -> None:
    settings.SAM3WEB_FETCH_TIMEOUT = 1
    started = time.monotonic()
    exc = fetch_refused(server.url("/trickle?interval=0.02"))
    elapsed = time.monotonic() - started
    assert exc.code == "timeout"
    assert exc.message == "Downloading the image took longer than 1 second, so we stopped."
    assert 0.9 < elapsed < 2.0


@pytest.mark.parametrize("path", ["/stall", "/silent"])
def test_silent_server_is_stopped_by_the_deadline(
    server: ImageServer, local: list, settings, path: str
) -> None:
    settings.SAM3WEB_FETCH_TIMEOUT = 1
    started = time.monotonic()
    assert fetch_refused(server.url(path)).code == "timeout"
    assert 0.9 < time.monotonic() - started < 2.0


def test_body_over_the_limit_is_stopped_while_streaming(
    server: ImageServer, local: list, settings
) -> None:
    settings.SAM3WEB_MAX_IMAGE_BYTES = MiB
    exc = fetch_refused(server.url(f"/big?bytes={20 * MiB}&length=none"))
    assert exc.code == "too_large"
    assert exc.message == "The image at that link is larger than the 1 MiB limit."


def test_declared_length_over_the_limit_is_refused_up_front(
    server: ImageServer, local: list, settings
) -> None:
    settings.SAM3WEB_MAX_IMAGE_BYTES = MiB
    assert fetch_refused(server.url(f"/big?bytes={MiB + 1}&length=true")).code == "too_large"


def test_body_exactly_at_the_limit_is_downloaded(
    server: ImageServer, local: list, settings
) -> None:
    settings.SAM3WEB_MAX_IMAGE_BYTES = MiB
    assert len(fetched(server.url(f"/big?bytes={MiB}&length=none"))) == MiB


def test_content_length_longer_than_the_body(server: ImageServer, local: list) -> None:
    exc = fetch_refused(server.url("/images/cat.jpg?length=999999"))
    assert exc.code == "unreachable"
    assert "broke off before the image was complete" in exc.message


def test_content_length_shorter_than_the_body(server: ImageServer, local: list) -> None:
    # The client believes the header and stops there: what arrives is a truncated JPEG.
    assert len(fetched(server.url("/images/cat.jpg?length=10000"))) == 10000
    assert fetch_refused(server.url("/images/cat.jpg?length=10000")).message == MSG_CORRUPT


def test_connection_refused(local: list) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exc = fetch_refused(f"http://127.0.0.1:{port}/cat.jpg")
    assert exc.message == "Could not connect to 127.0.0.1."


def test_tls_failure_is_a_clear_message(server: ImageServer, local: list) -> None:
    exc = fetch_refused(server.url("/images/cat.jpg").replace("http://", "https://"))
    assert exc.code == "unreachable"
    assert exc.message.startswith("Could not make a secure connection to 127.0.0.1")


def test_unknown_host(local: list, settings) -> None:
    settings.SAM3WEB_FETCH_TIMEOUT = 3
    exc = fetch_refused("http://no-such-host.invalid/cat.jpg")
    assert exc.code in ("unreachable", "timeout")  # a resolver that hangs hits the deadline


def test_proxy_settings_in_the_environment_are_ignored(
    server: ImageServer, local: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://10.9.9.9:3128")
    assert intake_url(server.url("/images/cat.jpg")).width == 451
    assert local == [("127.0.0.1", server.port)]
