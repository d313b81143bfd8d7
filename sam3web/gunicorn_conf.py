"""gunicorn's settings for bin/serve (`gunicorn -c python:sam3web.gunicorn_conf`); HOST, PORT and
WEB_WORKERS come from the environment."""

from __future__ import annotations

import os
import signal
from typing import Any

wsgi_app = "sam3web.wsgi"
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_WORKERS", "2"))
worker_class = "gthread"
# A run page open on a run in progress holds a thread in its long poll (segmentation.live).
threads = 16
timeout = 60
# On Ctrl+C or SIGTERM requests in flight get this long; the long polls end at once (below).
graceful_timeout = 5
accesslog = "-"


def post_worker_init(worker: Any) -> None:
    """When this web worker is told to stop, end the long polls it is serving, so it stops in
    moments instead of waiting them out (and being killed when the grace period ends)."""
    from segmentation.live import stopping

    def stop_then(handler: Any) -> Any:
        def handle(signum: int, frame: Any) -> None:
            stopping.set()
            handler(signum, frame)

        return handle

    signal.signal(signal.SIGTERM, stop_then(worker.handle_exit))
    signal.signal(signal.SIGQUIT, stop_then(worker.handle_quit))
    signal.signal(signal.SIGINT, stop_then(worker.handle_quit))
    # As gunicorn has it: SIGTERM must not interrupt the system calls of requests in flight.
    signal.siginterrupt(signal.SIGTERM, False)
