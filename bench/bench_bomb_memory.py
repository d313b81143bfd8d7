"""Peak memory while refusing a decompression bomb, against accepting a large photo.

    .venv/bin/python bench/bench_bomb_memory.py [--runs 5]

Each case runs in a fresh interpreter (a process's peak RSS only ever goes up, so cases must not
share one), several times, and the medians are printed. Two measures:

* peak RSS increase: ru_maxrss after the call minus the RSS just before it. This sees
  everything, including Pillow's pixel buffers, which are allocated in C.
* tracemalloc peak: Python-level allocations only (the bytes read, our copies, the encoded
  output). Pillow's decoded pixels do not show up here, which is why RSS is the one that matters.

Before measuring, each child imports everything and runs one small image through intake, so
codec libraries and lazy imports are not counted against the case.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.sample_images import IMAGES  # noqa: E402

MiB = 1024 * 1024

# name: (file, read from disk inside the measured region?)
CASES: dict[str, tuple[Path, bool]] = {
    "bomb 30000x30000 png, bytes in memory": (IMAGES / "bad/bomb-30000x30000.png", False),
    "bomb 30000x30000 png, read from disk": (IMAGES / "bad/bomb-30000x30000.png", True),
    "huge-header-only png, bytes in memory": (IMAGES / "bad/huge-header-only.png", False),
    "large 4032x3024 jpeg, bytes in memory": (IMAGES / "large-4032x3024.jpg", False),
    "large 4032x3024 jpeg, read from disk": (IMAGES / "large-4032x3024.jpg", True),
}


def current_rss_kib() -> int:
    """Resident set size now (Linux), in KiB; falls back to the peak elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(case: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sam3web.settings")
    import django

    django.setup()
    from segmentation.imaging.decode import ImageRejected
    from segmentation.imaging.intake import intake_bytes

    path, from_disk = CASES[case]
    intake_bytes((IMAGES / "cat.jpg").read_bytes())  # warm up imports and codecs
    data = None if from_disk else path.read_bytes()

    baseline_rss = current_rss_kib()
    baseline_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = intake_bytes(path.read_bytes() if data is None else data)
        outcome = f"accepted {result.width}x{result.height}"
    except ImageRejected as exc:
        outcome = f"refused: {exc.code}"
    seconds = time.perf_counter() - started
    _current, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result_json = {
        # How far the call pushed the process's high-water mark (ru_maxrss is in KiB on Linux).
        "rss_mib": (peak - baseline_peak) / 1024,
        "traced_mib": traced_peak / MiB,
        "seconds": seconds,
        "outcome": outcome,
        "baseline_mib": baseline_rss / 1024,
        "baseline_peak_mib": baseline_peak / 1024,
    }
    print(json.dumps(result_json))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    import django

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sam3web.settings")
    django.setup()  # fail early, here, if the settings cannot load
    from django.conf import settings

    print(
        f"intake_bytes peak memory, median of {args.runs} fresh processes each "
        f"(limit {settings.SAM3WEB_MAX_IMAGE_PIXELS / 1e6:g} MP, "
        f"{settings.SAM3WEB_MAX_IMAGE_BYTES / MiB:g} MiB)\n"
    )
    header = f"{'case':40} {'outcome':28} {'peak RSS +MiB':>13} {'tracemalloc MiB':>15} {'ms':>8}"
    print(header)
    print("-" * len(header))
    for case in CASES:
        runs = []
        for _ in range(args.runs):
            done = subprocess.run(
                [sys.executable, __file__, "--child", case],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        outcomes = {r["outcome"] for r in runs}
        print(
            f"{case:40} {' / '.join(sorted(outcomes)):28} "
            f"{statistics.median(r['rss_mib'] for r in runs):13.1f} "
            f"{statistics.median(r['traced_mib'] for r in runs):15.2f} "
            f"{statistics.median(r['seconds'] for r in runs) * 1000:8.1f}"
        )
    baseline = statistics.median(r["baseline_mib"] for r in runs)
    print(
        f"\nBaseline: a child's RSS after django.setup() and a warm-up image is about "
        f"{baseline:.0f} MiB.\npeak RSS + = rise of ru_maxrss during the call; tracemalloc "
        "sees Python allocations only (not Pillow's C pixel buffers)."
    )


if __name__ == "__main__":
    main()
