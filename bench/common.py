"""What the benchmarks share: a throwaway data folder set up before Django starts, percentiles,
and the app served by gunicorn as bin/serve runs it."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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


def throwaway_postgres() -> str:
    """Start a throwaway PostgreSQL server (tests/postgres_server.py) for this process and
    point DATABASE_URL at it; call before throwaway_django. Stopped, and its folder removed,
    when the process exits. Returns its URL."""
    import atexit

    from tests.postgres_server import PostgresServer

    exit_on_sigterm()
    server = PostgresServer().start()
    atexit.register(server.stop)
    os.environ["DATABASE_URL"] = server.url
    return server.url


def exit_on_sigterm() -> None:
    """SIGTERM (a `timeout`, a closed session) exits as Ctrl+C does, through the finally
    blocks and atexit handlers that stop what the benchmark started, instead of leaving them
    running."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def run_child(command: list[str]) -> None:
    """Run a benchmark's child process to the end; if this one is stopped meanwhile, stop the
    child the same way (SIGTERM, then SIGKILL after 30 s) so it cleans up after itself."""
    import signal

    exit_on_sigterm()
    child = subprocess.Popen(command)
    try:
        if child.wait():
            raise SystemExit(child.returncode)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(port: int, env: dict[str, str], *, workers: int = 2) -> subprocess.Popen:
    """The app under gunicorn as bin/serve runs it (sam3web/gunicorn_conf.py: gthread), with
    `workers` processes, answering once it is up."""

    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "python:sam3web.gunicorn_conf"],
        cwd=ROOT,
        env={
            "ALLOWED_HOSTS": "127.0.0.1",
            **env,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_WORKERS": str(workers),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return answering(proc, f"http://127.0.0.1:{port}/accounts/login/", "gunicorn")


def answering(proc: subprocess.Popen, url: str, what: str) -> subprocess.Popen:
    """``proc`` once ``url`` answers (within 10 s); killed, and an error, if it never does."""
    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


@contextmanager
def finished_run(data: bytes, name: str, *, masks: int, owner=None) -> Iterator:
    """A run the Runflow stand-in has finished with `masks` masks (a text prompt asking for
    several), stored as succeeded and queued for copying. The stand-in keeps serving the mask
    files until the block ends, so the real worker can copy them inside it."""
    from django.conf import settings
    from django.db import transaction

    from runflow_standin import RunflowStandin
    from segmentation.engines.runflow.client import RunflowClient
    from segmentation.imaging.intake import data_uri, intake_bytes
    from segmentation.imaging.store import store_image
    from segmentation.models import Run
    from segmentation.tasks import enqueue_copy

    taken = intake_bytes(data)
    image = store_image(taken, original_name=name)
    prompt = {
        "prompt": "objects",
        "return_multiple_masks": True,
        "max_masks": masks,
        "include_scores": True,
        "include_boxes": True,
    }
    with RunflowStandin(api_keys=["k"]) as standin:
        settings.RUNFLOW_BASE_URL, settings.RUNFLOW_API_KEY = standin.base_url, "k"
        run = Run.objects.create(owner=owner, image=image, input=prompt)
        with RunflowClient(base_url=standin.base_url, api_key="k") as client:
            made = client.create_run(
                input={"image_url": data_uri(taken.data, taken.content_type), **prompt},
                idempotency_key=str(run.id),
            )
            standin.finish(made["id"])
            output = client.get_run(made["id"])["output"]
        with transaction.atomic():
            Run.objects.filter(pk=run.pk).update(
                status=Run.Status.SUCCEEDED,
                provider_run_id=made["id"],
                output=output,
                cost="0.005",
                artifacts=Run.Artifacts.PENDING,
            )
            enqueue_copy(run.pk)
        yield run


def copied_run(photo: Path, user, masks: int):
    """A succeeded run on `photo` whose masks the real artifact task copied from the stand-in,
    in the real database worker."""
    from django.core.management import call_command

    from segmentation.models import Run

    with finished_run(photo.read_bytes(), photo.name, masks=masks, owner=user) as run:
        start = time.perf_counter()
        call_command("db_worker", "--batch", "--no-startup-delay", "--interval", "0", verbosity=0)
        copied = time.perf_counter() - start
    run.refresh_from_db()
    assert run.artifacts == Run.Artifacts.DONE, run.artifact_notes
    assert run.masks.exclude(file="").count() == masks
    print(f"  {masks} masks copied by the real worker in {copied:.1f} s")
    return run


def served_env() -> dict[str, str]:
    """As bin/serve: collected static files (hashed, compressed by WhiteNoise) when that works,
    else served from the source folders."""
    env = {**os.environ, "ALLOWED_HOSTS": "127.0.0.1", "SAM3WEB_STATIC_MANIFEST": "1"}
    done = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print("  (collectstatic failed; static files served uncompressed from the source)")
        env["SAM3WEB_STATIC_MANIFEST"] = "0"
    return env


# --- memory of this process (Linux) -----------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs 5).

    Needed because ru_maxrss survives execve: a child started by this (big) parent begins with
    the parent's peak as its own, which would hide a smaller rise. VmHWM belongs to the new
    address space and can be reset, so after this the peak is that of the measured run alone."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def current_rss_kib() -> int:
    return _status_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_kib() -> int:
    """VmHWM where there is one, else ru_maxrss (KiB on Linux)."""
    return _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
