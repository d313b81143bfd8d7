"""A small, real HTTP server for tests that fetch image URLs.

It listens on 127.0.0.1 on a free port, in a background thread, and serves canned responses that
exercise every way an image download can go wrong::

    with ImageServer() as server:
        server.url("/images/cat.jpg")                   # a test image (bad/ too), see sample_images
        server.url("/images/cat.jpg?type=text/html")     # ... with a Content-Type of our choosing
        server.url("/images/cat.jpg?length=999999")      # ... with a Content-Length that lies
        server.url("/page")                              # an HTML page
        server.url("/status/404")                        # any status code
        server.url("/redirect?to=http://10.0.0.1/")      # a 302 to anywhere (code=301/303/307/308)
        server.url("/chain/3")                           # 3 redirects, then /images/cat.jpg
        server.url("/loop")                              # redirects to itself; /loop/a <-> /loop/b
        server.url("/trickle")                           # 200 image/png, then a byte every 50 ms
        server.url("/stall")                             # 200 headers and a few bytes, then silence
        server.url("/silent")                            # accepts the request, never answers
        server.url("/big?bytes=5000000&length=none")     # a big body (length=none|true|<number>)

Every request is recorded in ``server.requests`` (path and headers), so a test can prove that a
refused URL never reached the server.
"""

from __future__ import annotations

import mimetypes
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from tests.sample_images import IMAGES as IMAGES_DIR

HTML_PAGE = b"<!doctype html><html><head><title>Cats</title></head><body><p>Cats!</p></body></html>"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a trickling handler must not keep the test run alive
    allow_reuse_address = True

    def __init__(self, images_dir: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.images_dir = images_dir
        self.stopping = threading.Event()
        self.requests: list[RecordedRequest] = []
        self.lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hanging up mid-body is exactly what the tests provoke; stay quiet about it.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection; bodies end when we close
    timeout = 10  # for reading the request line and headers

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append(RecordedRequest(self.path, dict(self.headers.items())))
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path.startswith("/images/"):
            self._image(path.removeprefix("/images/"), query)
        elif path == "/page":
            self._send(200, HTML_PAGE, "text/html; charset=utf-8")
        elif path.startswith("/status/"):
            code = int(path.removeprefix("/status/"))
            self._send(code, f"status {code}\n".encode(), "text/plain")
        elif path == "/redirect":
            self._redirect(query["to"], int(query.get("code", "302")))
        elif path.startswith("/chain/"):
            # /chain/N answers with N redirects in a row, then the final image.
            left = int(path.removeprefix("/chain/"))
            final = query.get("final", "/images/cat.jpg")
            if left > 0:
                self._redirect(f"/chain/{left - 1}?final={final}")
            else:
                self._image(final.removeprefix("/images/"), {})
        elif path == "/loop":
            self._redirect("/loop")
        elif path in ("/loop/a", "/loop/b"):
            self._redirect("/loop/b" if path == "/loop/a" else "/loop/a")
        elif path == "/trickle":
            self._trickle(float(query.get("interval", "0.05")))
        elif path == "/stall":
            self._headers(200, "image/png")
            self.wfile.write(PNG_SIGNATURE)
            self.wfile.flush()
            self.server.stopping.wait(60)
        elif path == "/silent":
            self.server.stopping.wait(60)
        elif path == "/big":
            self._big(int(query.get("bytes", str(5 * 1024 * 1024))), query.get("length", "none"))
        else:
            self._send(404, b"not found\n", "text/plain")

    # --- responses ------------------------------------------------------------------------------

    def _headers(self, code: int, content_type: str, length: int | None = None, **extra: str):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in extra.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self._headers(code, content_type, len(body))
        self.wfile.write(body)

    def _redirect(self, location: str, code: int = 302) -> None:
        body = b"moved\n"
        self._headers(code, "text/plain", len(body), Location=location)
        self.wfile.write(body)

    def _image(self, name: str, query: dict[str, str]) -> None:
        root = self.server.images_dir.resolve()
        file = (root / name).resolve()
        if not file.is_relative_to(root) or not file.is_file():
            self._send(404, b"no such image\n", "text/plain")
            return
        body = file.read_bytes()
        guessed = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        length = int(query["length"]) if "length" in query else len(body)
        self._headers(200, query.get("type", guessed), length)
        self.wfile.write(body)

    def _trickle(self, interval: float) -> None:
        """A PNG that never ends: one more byte every interval until the client gives up."""
        self._headers(200, "image/png")
        self.wfile.write(PNG_SIGNATURE)
        self.wfile.flush()
        while not self.server.stopping.wait(interval):
            self.wfile.write(b"\0")
            self.wfile.flush()

    def _big(self, size: int, length: str) -> None:
        declared = None if length == "none" else size if length == "true" else int(length)
        self._headers(200, "image/png", declared)
        chunk = PNG_SIGNATURE + bytes(64 * 1024 - len(PNG_SIGNATURE))
        sent = 0
        while sent < size and not self.server.stopping.is_set():
            piece = chunk[: size - sent]
            self.wfile.write(piece)
            sent += len(piece)
            chunk = bytes(64 * 1024)


class ImageServer:
    """Start with ``with ImageServer() as server:`` (or start()/stop())."""

    def __init__(self, images_dir: Path = IMAGES_DIR) -> None:
        self._httpd = _Server(images_dir)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.port: int = self._httpd.server_address[1]

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._httpd.lock:
            return list(self._httpd.requests)

    def reset(self) -> None:
        with self._httpd.lock:
            self._httpd.requests.clear()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.stopping.set()  # releases trickling and stalled handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
