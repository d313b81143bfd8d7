"""Time and peak memory of ingesting one run's artifacts: 32 masks downloaded from a local HTTP
server, normalised, drawn into an overlay, and a thumbnail made.

    .venv/bin/python bench/bench_artifacts.py [--runs 5] [--masks 32]

The masks are 1024x1024 L-mode PNGs of ellipses, served from memory by a ThreadingHTTPServer on
127.0.0.1, which is made RUNFLOW_BASE_URL so downloads from it are trusted (as Runflow's storage
is). Two cases: masks at the image's size (a 1024x1024 photo), and masks at another size and
aspect than the image (a 4032x3024 phone photo: every mask is stretched to 12 megapixels).

Each repeat runs in a fresh interpreter (a process's peak RSS only ever goes up), which first
ingests one small mask to load codecs and imports, then measures one full ingestion: wall time
per stage, CPU time, and the rise of ru_maxrss (everything, Pillow's C buffers included).
Medians over the repeats are printed.

``ingest_all`` is the pure part (no Django models, no storage) so that a variant going through
the app's real background task can reuse it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import current_rss_kib, peak_rss_kib, reset_peak  # noqa: E402
from tests.sample_images import IMAGES  # noqa: E402

MiB = 1024 * 1024
MASK_SIZE = (1024, 1024)

# name: (image width, image height, how the image is made)
CASES: dict[str, tuple[int, int, str]] = {
    "1024x1024 image, masks same size": (1024, 1024, "square"),
    "4032x3024 image, masks stretched": (4032, 3024, "large"),
}


def _setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sam3web.settings")
    import django

    django.setup()


def ingest_all(
    urls: list[str], width: int, height: int, *, image_bytes: bytes | None = None
) -> dict:
    """Download and normalise every mask (one at a time: only its compressed 1-bit PNG is kept),
    then render the overlay from those PNGs and, given the image, the thumbnail. Returns the
    results and the wall time of each stage in ms. Raises ArtifactError like the pieces do."""
    from segmentation.engines import get as get_engine
    from segmentation.imaging.masks import normalize_mask
    from segmentation.imaging.render import colour_for, render_overlay, render_thumbnail

    # The way the copy task downloads: through the Runflow engine (its origin trusted).
    download = get_engine("runflow").download

    times = {"download": 0.0, "normalize": 0.0, "overlay": 0.0, "thumbnail": 0.0}
    masks: list[dict] = []
    for index, url in enumerate(urls):
        what = f"mask {index}"
        started = time.perf_counter()
        data = download(url, what=what)
        downloaded = time.perf_counter()
        mask = normalize_mask(data, width, height, what=what, provider="Runflow")
        del data
        times["download"] += downloaded - started
        times["normalize"] += time.perf_counter() - downloaded
        masks.append({"index": index, "png": mask.png, "area": mask.area, "bbox": mask.bbox})

    def stream() -> Iterator[tuple[bytes, tuple[int, int, int]]]:
        for m in masks:
            yield m["png"], colour_for(m["index"])

    started = time.perf_counter()
    overlay = render_overlay(stream(), width, height)
    times["overlay"] = time.perf_counter() - started
    thumbnail = None
    if image_bytes is not None:
        started = time.perf_counter()
        thumbnail = render_thumbnail(image_bytes, overlay)
        times["thumbnail"] = time.perf_counter() - started
    return {
        "masks": masks,
        "overlay": overlay,
        "thumbnail": thumbnail,
        "times_ms": {k: v * 1000 for k, v in times.items()},
    }


# --- fixtures: masks, image, server -------------------------------------------------------------


def make_masks(count: int) -> list[bytes]:
    """count different ellipses, PNG, L mode, at MASK_SIZE."""
    from PIL import Image, ImageDraw

    w, h = MASK_SIZE
    out = []
    for i in range(count):
        im = Image.new("L", (w, h), 0)
        cx, cy = (97 * i) % (w - 200) + 100, (61 * i) % (h - 200) + 100
        rx, ry = 60 + (37 * i) % 300, 50 + (53 * i) % 280
        ImageDraw.Draw(im).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def make_image(kind: str) -> bytes:
    from PIL import Image

    data = (IMAGES / "large-4032x3024.jpg").read_bytes()
    if kind == "large":
        return data
    im = (
        Image.open(io.BytesIO(data))
        .crop((504, 0, 3528, 3024))
        .resize((1024, 1024), Image.Resampling.LANCZOS)
    )
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


class _Files(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files


class _Handler(BaseHTTPRequestHandler):
    server: _Files
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --- one measured run, in a fresh process -------------------------------------------------------


def child(case: str, base: str, count: int, image_path: str) -> None:
    os.environ["RUNFLOW_BASE_URL"] = base  # read by the settings: trusted origin
    _setup_django()
    from django.conf import settings

    if base != settings.RUNFLOW_BASE_URL:  # an environment or settings surprise
        raise SystemExit(f"RUNFLOW_BASE_URL is {settings.RUNFLOW_BASE_URL!r}, not {base!r}")
    width, height, _kind = CASES[case]
    image_bytes = Path(image_path).read_bytes()
    # Warm-up: imports, codecs, the SSL context, one small ingestion.
    ingest_all([f"{base}/warmup.png"], 64, 48, image_bytes=image_bytes)

    urls = [f"{base}/mask/{i}.png" for i in range(count)]
    exact = reset_peak()
    rss_before = current_rss_kib() if exact else None
    peak_before = peak_rss_kib()
    cpu_before = time.process_time()
    started = time.perf_counter()
    result = ingest_all(urls, width, height, image_bytes=image_bytes)
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    peak_after = peak_rss_kib()
    print(
        json.dumps(
            {
                "total_ms": total * 1000,
                "cpu_ms": cpu * 1000,
                "rss_mib": (peak_after - (rss_before or peak_before)) / 1024,
                "baseline_mib": (rss_before or peak_before) / 1024,
                "exact_peak": exact,
                "times_ms": result["times_ms"],
                "masks": len(result["masks"]),
                "mask_png_kib": sum(len(m["png"]) for m in result["masks"]) / 1024,
                "overlay_kib": len(result["overlay"]) / 1024,
                "thumbnail_kib": len(result["thumbnail"] or b"") / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--masks", type=int, default=32)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.base, args.masks, args.image)
        return

    _setup_django()  # fail early, here, if the settings cannot load
    from PIL import Image

    masks = make_masks(args.masks)
    warm = io.BytesIO()
    Image.new("L", (32, 24), 255).save(warm, "PNG")
    files = {f"/mask/{i}.png": data for i, data in enumerate(masks)}
    files["/warmup.png"] = warm.getvalue()
    httpd = _Files(files)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    mask_kib = sum(len(m) for m in masks) / len(masks) / 1024
    print(
        f"Ingesting {args.masks} masks of {MASK_SIZE[0]}x{MASK_SIZE[1]} (PNG, L, ~{mask_kib:.1f} "
        f"KiB each) from {base}: download + normalize_mask + render_overlay + render_thumbnail.\n"
        f"Median of {args.runs} fresh processes per case.\n"
    )
    header = (
        f"{'case':34} {'total ms':>9} {'per mask':>9} {'download':>9} {'normalize':>9} "
        f"{'overlay':>8} {'thumb':>7} {'CPU ms':>8} {'peak RSS +MiB':>13}"
    )
    print(header)
    print("-" * len(header))
    notes = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for case, (_w, _h, kind) in CASES.items():
                image_path = Path(tmp) / f"{kind}.jpg"
                image_path.write_bytes(make_image(kind))
                runs = []
                for _ in range(args.runs):
                    done = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            case,
                            "--base",
                            base,
                            "--masks",
                            str(args.masks),
                            "--image",
                            str(image_path),
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                        cwd=ROOT,
                    )
                    runs.append(json.loads(done.stdout.strip().splitlines()[-1]))

                def med(key: str, runs: list[dict] = runs) -> float:
                    return statistics.median(r[key] for r in runs)

                def stage(name: str, runs: list[dict] = runs) -> float:
                    return statistics.median(r["times_ms"][name] for r in runs)

                total = med("total_ms")
                print(
                    f"{case:34} {total:9.0f} {total / args.masks:9.1f} {stage('download'):9.0f} "
                    f"{stage('normalize'):9.0f} {stage('overlay'):8.0f} {stage('thumbnail'):7.0f} "
                    f"{med('cpu_ms'):8.0f} {med('rss_mib'):13.1f}"
                )
                notes.append(
                    f"{case}: our mask PNGs {med('mask_png_kib'):.0f} KiB in all, overlay "
                    f"{med('overlay_kib'):.0f} KiB, thumbnail {med('thumbnail_kib'):.1f} KiB; "
                    f"child RSS before the run {med('baseline_mib'):.0f} MiB"
                )
    finally:
        httpd.shutdown()
        httpd.server_close()
    print()
    for line in notes:
        print(line)
    print(
        "\nper mask = total / masks. CPU ms is the child's process time (the server runs in the "
        "parent).\npeak RSS + = the child's peak RSS during the measured ingestion minus its RSS "
        "just before\n(after a warm-up; the peak is reset first where Linux allows, as ru_maxrss "
        "would start at the\nparent's peak)."
    )


if __name__ == "__main__":
    main()
