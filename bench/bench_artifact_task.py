"""Artifact ingestion through the app itself: a succeeded run with 32 masks of 1024×1024 from
the Runflow stand-in, copied by the real `copy_artifacts` task in the real database worker
(downloads, mask normalising, storage, Mask rows, overlay, thumbnail).

    .venv/bin/python bench/bench_artifact_task.py [--repeats 5]

Each repeat runs in a fresh process with its own throwaway data folder; the figures are the
worker's wall time and the process's peak RSS rise during it (medians)."""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MASKS = 32
SIZE = 1024


def child() -> None:
    from bench.common import finished_run, throwaway_django

    throwaway_django()
    from django.core.management import call_command
    from PIL import Image, ImageDraw

    from bench.common import current_rss_kib, peak_rss_kib, reset_peak
    from segmentation.models import Run

    call_command("migrate", verbosity=0)
    photo = Image.new("RGB", (SIZE, SIZE), (90, 110, 130))
    ImageDraw.Draw(photo).ellipse((100, 100, 900, 900), fill=(200, 160, 90))
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    with finished_run(buf.getvalue(), "blob.png", masks=MASKS) as run:
        reset_peak()
        before = current_rss_kib()
        start = time.perf_counter()
        call_command("db_worker", "--batch", "--no-startup-delay", "--interval", "0")
        elapsed = (time.perf_counter() - start) * 1000
        peak = peak_rss_kib()

    run.refresh_from_db()
    assert run.artifacts == Run.Artifacts.DONE, run.artifact_notes
    assert run.masks.exclude(file="").count() == MASKS
    print(json.dumps({"ms": elapsed, "rss_mib": (peak - before) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child()
        return
    results = []
    for _ in range(args.repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ms = statistics.median(r["ms"] for r in results)
    rss = statistics.median(r["rss_mib"] for r in results)
    print(f"copy_artifacts in the worker, {MASKS} masks of {SIZE}×{SIZE} ({args.repeats} runs):")
    print(f"  median {ms:7.0f} ms   ({ms / MASKS:.1f} ms per mask)   peak RSS rise {rss:5.1f} MiB")


if __name__ == "__main__":
    main()
