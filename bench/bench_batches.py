"""Batch figures: N images × 2 concepts through one worker against the Runflow stand-in, which
answers at once or finishes each run 1 s after it was made.

- intake: N uploads taken in (sniffing, EXIF, thumbnails) by the worker;
- from Start to the last run sent (every run released and accepted by the stand-in);
- runs per second through submit → result → stored masks, with one worker;
- the batch page's server time (and its progress fragment's) once the batch holds 2N runs.

    .venv/bin/python bench/bench_batches.py [--images 500] [--delays 0 1]

Runs against a throwaway data folder (SQLite database and media), never the app's own."""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import throwaway_django  # noqa: E402

DATA = throwaway_django()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from runflow_standin import RunflowStandin  # noqa: E402
from segmentation import batches, schema  # noqa: E402
from segmentation.models import Batch, Run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = {option.name: option.initial for option in schema.OPTIONS}


def photos(n: int, seed: int) -> list[SimpleUploadedFile]:
    """``n`` different 640×480 JPEGs."""
    files = []
    for i in range(n):
        # Its number written on it: every photo differs (duplicates would be taken once).
        im = Image.new("RGB", (640, 480), (i % 256, 90, seed % 256))
        ImageDraw.Draw(im).text((40, 40), f"site {seed} photo {i}", fill=(255, 255, 255))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        files.append(SimpleUploadedFile(f"site-{seed}-{i:04d}.jpg", buf.getvalue()))
    return files


def worker(standin: RunflowStandin) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SAM3WEB_DATA_DIR": DATA,
        "RUNFLOW_BASE_URL": standin.base_url,
        "RUNFLOW_API_KEY": "bench-key",
        "SAM3WEB_STATIC_MANIFEST": "0",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "worker", "--", "--no-startup-delay"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait(predicate: Callable[[], bool], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.1)


def one_batch(owner: Any, images: int, delay: float, standin: RunflowStandin) -> Batch:
    standin.reset()
    standin.complete_after = delay
    batch = batches.create_batch(
        owner=owner,
        concepts=["helmet", "vest"],
        options=OPTIONS,
        files=photos(images, seed=int(delay * 10) + 1),
    )
    proc = worker(standin)
    try:
        began = time.monotonic()
        wait(lambda: Batch.objects.get(pk=batch.pk).state == Batch.State.READY)
        intake = time.monotonic() - began
        batch.refresh_from_db()
        started = time.monotonic()
        assert batch.items.filter(state="accepted").count() == images
        assert batches.start(batch)
        total = images * 2
        wait(lambda: len(standin.create_calls()) >= total)
        sent = time.monotonic() - started
        wait(
            lambda: (
                Run.objects.filter(
                    batch=batch, status=Run.Status.SUCCEEDED, artifacts=Run.Artifacts.DONE
                ).count()
                >= total
            )
        )
        stored = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    answer = "at once" if not delay else f"after {delay:g} s"
    print(f"stand-in answering {answer}: {images} images × 2 concepts = {total} runs")
    print(
        f"  intake of {images} uploads          {intake:8.1f} s  ({images / intake:.1f} images/s)"
    )
    print(f"  Start → last run sent           {sent:8.1f} s")
    print(f"  Start → last masks stored       {stored:8.1f} s  ({total / stored:.1f} runs/s)")
    print(f"  limit: {settings.SAM3WEB_BATCH_CONCURRENCY} batch runs at Runflow at once")
    return batch


def page_ms(client: Client, url: str, repeat: int = 15) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - began) * 1000)
        assert response.status_code in (200, 286), response.status_code  # 286: done, stop polling
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 1.0])
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    owner = get_user_model().objects.create_user("bench", password="bench-password-1")
    client = Client()
    client.force_login(owner)
    with RunflowStandin(api_keys=["bench-key"]) as standin:
        last = None
        for delay in args.delays:
            last = one_batch(owner, args.images, delay, standin)
    assert last is not None
    runs = last.cells.count()
    detail = page_ms(client, f"/batches/{last.pk}/")
    fragment = page_ms(client, f"/batches/{last.pk}/progress/")
    print(
        f"batch page at {runs} runs: {detail:.1f} ms median (progress fragment {fragment:.1f} ms)"
    )


if __name__ == "__main__":
    main()
