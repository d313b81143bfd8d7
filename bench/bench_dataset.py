"""Time and peak memory of a batch's dataset export (COCO JSON, YOLO ZIP) at 100 runs and at
1,000 runs of 5 masks each: the peak must not grow with the batch.

    .venv/bin/python bench/bench_dataset.py [--small 100] [--large 1000] [--masks 5] [--runs 3]
        [--formats coco.json,yolo.zip]   (also coco.zip, masks.zip)

A throwaway data folder (SQLite database, media) gets two batches of 5 concepts over 640x480
images (runs / 5 images each), every run succeeded with ``--masks`` masks: 1-bit PNGs of their
own (hard links to a few pre-drawn ellipses, some in two parts), plus a one-image batch to warm
up. Each export runs in a fresh interpreter (a process's peak RSS only ever goes up, so sizes
must not share one), which warms up on the small batch's format, resets its peak where Linux
allows, then reads the whole stream of ``segmentation.datasets.stream`` (what the view sends),
counting the bytes. Two memory figures per export:

* peak RSS: the child's ru_maxrss as the parent's os.wait4 reports it (everything: Django,
  NumPy, OpenCV, Pillow's buffers);
* rise: the child's peak during the export minus its RSS just before (after the warm-up).

Medians of ``--runs`` children per case are printed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import current_rss_kib, peak_rss_kib, reset_peak  # noqa: E402

SIZE = (640, 480)
CONCEPTS = ["person", "car", "tree", "dog", "sign"]
VARIANTS = 20


def _django(data: str) -> None:
    """Django on the throwaway folder ``data``, never the app's own database or media."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ["SAM3WEB_DATA_DIR"] = data
    for name in ("DATABASE_URL", "MEDIA_ROOT"):
        os.environ.pop(name, None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "sam3web.settings"
    os.environ["SAM3WEB_STATIC_MANIFEST"] = "0"
    os.environ["DEBUG"] = "0"  # no query log growing with the export
    import django

    django.setup()


# --- the data -----------------------------------------------------------------------------------


def _mask_variants(folder: Path) -> list[tuple[Path, int, tuple[int, int, int, int]]]:
    """A few 1-bit masks at SIZE (every fourth in two parts): (file, area, box)."""
    from PIL import Image, ImageDraw

    w, h = SIZE
    out = []
    for i in range(VARIANTS):
        im = Image.new("1", SIZE, 0)
        draw = ImageDraw.Draw(im)
        cx, cy = 60 + (97 * i) % (w - 120), 60 + (61 * i) % (h - 120)
        rx, ry = 20 + (37 * i) % 40, 20 + (53 * i) % 40
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=1)
        if i % 4 == 0:
            draw.ellipse((w - cx - 25, h - cy - 20, w - cx + 25, h - cy + 20), fill=1)
        path = folder / f"variant-{i}.png"
        im.save(path, "PNG")
        box = im.getbbox()
        assert box is not None
        out.append((path, im.histogram()[255], box))
    return out


def make_batch(owner, runs: int, masks: int, variants, media: Path, name: str) -> int:
    """A running batch of ``runs`` succeeded runs (runs / 5 images × 5 concepts), every mask a
    file of its own. Rows are written with bulk_create."""
    from django.db import transaction

    from segmentation.models import Batch, BatchItem, BatchRun, Mask, Run, SourceImage

    images = max(1, runs // len(CONCEPTS))
    concepts = CONCEPTS[: min(len(CONCEPTS), runs)]
    folder = media / "masks" / name
    folder.mkdir(parents=True, exist_ok=True)
    with transaction.atomic():
        batch = Batch.objects.create(owner=owner, name=name, concepts=concepts, state="running")
        sources = SourceImage.objects.bulk_create(
            SourceImage(
                file="images/bench.jpg",
                sha256=uuid.uuid4().hex * 2,
                content_type="image/jpeg",
                width=SIZE[0],
                height=SIZE[1],
                byte_size=1,
                original_name=f"street-{i}.jpg",
            )
            for i in range(images)
        )
        items = BatchItem.objects.bulk_create(
            BatchItem(batch=batch, position=i, name=f"street-{i}.jpg", image=s, state="accepted")
            for i, s in enumerate(sources)
        )
        run_rows, cells, mask_rows = [], [], []
        n = 0
        for item, source in zip(items, sources, strict=True):
            for concept in concepts:
                run = Run(
                    owner=owner,
                    image=source,
                    input={"prompt": concept},
                    status=Run.Status.SUCCEEDED,
                    batch=batch,
                    artifacts=Run.Artifacts.DONE,
                )
                run.derive_columns()
                run_rows.append(run)
                cells.append(BatchRun(batch=batch, item=item, concept=concept, run=run))
                for index in range(masks):
                    path, area, box = variants[n % len(variants)]
                    n += 1
                    target = folder / f"{run.pk.hex}-{index}.png"
                    try:
                        os.link(path, target)
                    except OSError:  # no hard links here: a copy
                        shutil.copyfile(path, target)
                    mask_rows.append(
                        Mask(
                            run=run,
                            index=index,
                            file=str(target.relative_to(media)),
                            score=0.9 - index / 20,
                            x_min=box[0],
                            y_min=box[1],
                            x_max=box[2],
                            y_max=box[3],
                            area=area,
                        )
                    )
        Run.objects.bulk_create(run_rows, batch_size=1000)
        BatchRun.objects.bulk_create(cells, batch_size=1000)
        Mask.objects.bulk_create(mask_rows, batch_size=1000)
    return batch.pk


def setup(data: str, small: int, large: int, masks: int) -> None:
    _django(data)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    media = Path(settings.MEDIA_ROOT)
    folder = media / "variants"
    folder.mkdir(parents=True, exist_ok=True)
    variants = _mask_variants(folder)
    owner = get_user_model().objects.create_user("bench")
    started = time.perf_counter()
    ids = {
        "warm": make_batch(owner, len(CONCEPTS), 2, variants, media, "warm"),
        "small": make_batch(owner, small, masks, variants, media, "small"),
        "large": make_batch(owner, large, masks, variants, media, "large"),
    }
    print(json.dumps({**ids, "seconds": time.perf_counter() - started}))


# --- one measured export, in a fresh process ----------------------------------------------------


def child(data: str, batch_id: int, warm_id: int, fmt: str) -> None:
    _django(data)
    from segmentation import datasets
    from segmentation.models import Batch

    options = datasets.Options()
    for _chunk in datasets.stream(Batch.objects.get(pk=warm_id), fmt, options):
        pass
    batch = Batch.objects.get(pk=batch_id)
    exact = reset_peak()
    before = current_rss_kib()
    cpu = time.process_time()
    started = time.perf_counter()
    total = chunks = 0
    for chunk in datasets.stream(batch, fmt, options):
        total += len(chunk)
        chunks += 1
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    peak = peak_rss_kib()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "bytes": total,
                "chunks": chunks,
                "rise_mib": (peak - before) / 1024,
                "exact": exact,
            }
        )
    )


def measure(data: str, batch_id: int, warm_id: int, fmt: str) -> dict:
    """One child: its report, and its peak RSS as the kernel kept it (os.wait4)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", data, str(batch_id), str(warm_id), fmt],
            stdout=out,
            cwd=ROOT,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"the child for {fmt} of batch {batch_id} failed")
        out.seek(0)
        report = json.loads(io.TextIOWrapper(out).read().strip().splitlines()[-1])
    report["peak_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--small", type=int, default=100, help="runs in the small batch")
    parser.add_argument("--large", type=int, default=1000, help="runs in the large batch")
    parser.add_argument("--masks", type=int, default=5, help="masks per run")
    parser.add_argument("--runs", type=int, default=3, help="children per case")
    parser.add_argument("--formats", default="coco.json,yolo.zip", help="comma-separated")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data, batch_id, warm_id, fmt = args.child
        child(data, int(batch_id), int(warm_id), fmt)
        return
    if args.setup:
        setup(args.setup, args.small, args.large, args.masks)
        return

    data = tempfile.mkdtemp(prefix="sam3web-bench-")
    try:
        made = subprocess.run(
            [sys.executable, __file__, "--setup", data, *_sizes(args)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        ids = json.loads(made.stdout.strip().splitlines()[-1])
        print(
            f"Dataset export of a batch: {args.small:,} and {args.large:,} runs x {args.masks} "
            f"masks ({SIZE[0]}x{SIZE[1]}, 1-bit PNG), 5 concepts, SQLite; made in "
            f"{ids['seconds']:.1f} s.\nMedian of {args.runs} fresh processes per case; every "
            "byte of segmentation.datasets.stream read.\n"
        )
        header = (
            f"{'format':10} {'runs':>6} {'masks':>6} {'seconds':>8} {'ms/mask':>8} "
            f"{'CPU s':>7} {'MB out':>8} {'peak RSS MiB':>13} {'rise MiB':>9}"
        )
        print(header)
        print("-" * len(header))
        peaks: dict[str, list[float]] = {}
        for fmt in args.formats.split(","):
            for size, runs in (("small", args.small), ("large", args.large)):
                reports = [measure(data, ids[size], ids["warm"], fmt) for _ in range(args.runs)]

                def med(key: str, reports: list[dict] = reports) -> float:
                    return statistics.median(r[key] for r in reports)

                masks = runs * args.masks
                peaks.setdefault(fmt, []).append(med("peak_mib"))
                print(
                    f"{fmt:10} {runs:>6,} {masks:>6,} {med('seconds'):8.2f} "
                    f"{med('seconds') * 1000 / masks:8.2f} {med('cpu'):7.2f} "
                    f"{med('bytes') / 1e6:8.2f} {med('peak_mib'):13.1f} {med('rise_mib'):9.1f}"
                )
        print()
        for fmt, (small, large) in peaks.items():
            print(
                f"{fmt}: peak RSS at {args.large:,} runs / at {args.small:,} runs = "
                f"{large / small:.3f}"
            )
        print(
            "\npeak RSS = the child's ru_maxrss (os.wait4): the whole process, Django, NumPy, "
            "OpenCV and all.\nrise = its peak during the export minus its RSS just before, "
            "after a warm-up export of a\none-image batch (the peak reset first where Linux "
            "allows)."
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _sizes(args: argparse.Namespace) -> list[str]:
    return ["--small", str(args.small), "--large", str(args.large), "--masks", str(args.masks)]


if __name__ == "__main__":
    main()
