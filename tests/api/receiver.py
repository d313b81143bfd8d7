"""A caller's callback endpoint, for the tests: a real HTTP server on 127.0.0.1 that records
every POST (raw body, headers, when) and answers as its path says:

    /ok            200
    /status/503    that status (any)
    /flaky/2       500 for the first 2 requests, then 200
    /slow/30       waits that many seconds before answering 200
    /close         closes the connection without answering
    /redirect      302 to /ok (a callback must not follow it)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients giving up mid-answer is what the tests provoke


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.received.append(
                Received(
                    path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                )
            )
            count = self.server.counts[path] = self.server.counts.get(path, 0) + 1
        parts = path.strip("/").split("/")
        if parts[0] == "status":
            self._answer(int(parts[1]))
        elif parts[0] == "flaky":
            self._answer(500 if count <= int(parts[1]) else 200)
        elif parts[0] == "slow":
            self.server.stopping.wait(float(parts[1]))
            self._answer(200)
        elif parts[0] == "close":
            self.close_connection = True
            self.connection.close()
        elif parts[0] == "redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(200)

    def _answer(self, status: int) -> None:
        payload = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class CallbackReceiver:
    def __init__(self) -> None:
        self._server = _Server()
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def received(self) -> list[Received]:
        with self._server.lock:
            return list(self._server.received)

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
