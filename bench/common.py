"""What the benchmarks share: a throwaway data folder set up before Django starts, percentiles,
and the app served by gunicorn as bin/serve runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT.parent / "shared" / "images"


def throwaway_django(*, static_manifest: bool = False) -> str:
    """Point the app at a new temporary data folder (database, media) and start Django; a
    benchmark never touches the app's own data. Returns the folder."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    data = tempfile.mkdtemp(prefix="sam3web-bench-")
    os.environ["SAM3WEB_DATA_DIR"] = data
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sam3web.settings")
    os.environ["SAM3WEB_STATIC_MANIFEST"] = "1" if static_manifest else "0"
    import django

    django.setup()
    return data


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(port: int, env: dict[str, str], *, workers: int = 2) -> subprocess.Popen:
    """The app under gunicorn (gthread, 4 threads a process), answering once it is up."""
    import httpx

    proc = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "sam3web.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(workers),
            "--threads",
            "4",
        ],
        cwd=ROOT,
        env={"ALLOWED_HOSTS": "127.0.0.1", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("gunicorn did not start")
