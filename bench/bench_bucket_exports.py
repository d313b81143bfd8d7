"""What keeping exports in the bucket costs: a batch's dataset (COCO JSON, YOLO ZIP) at 1,000
runs of 5 masks, its masks in a bucket (moto's server on 127.0.0.1), built three ways:

* streamed: every byte of ``segmentation.datasets.stream`` read (what the view sends without a
  bucket);
* to the bucket: ``stored_exports.keep`` uploading the same stream as it is built, until the
  redirect is ready (what a teammate waits for before the download starts);
* download: the signed link fetched whole.

    .venv/bin/python bench/bench_bucket_exports.py [--runs 1000] [--masks 5] [--repeat 3]

Medians of ``--repeat``; SQLite; moto in a process of its own, on the same 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--masks", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="coco.json,yolo.zip")
    parser.add_argument(
        "--read-ahead", type=int, nargs="+", default=[1, 8], help="mask files read at once"
    )
    args = parser.parse_args()

    from bench.common import answering, exit_on_sigterm
    from tests.s3_server import S3Server

    exit_on_sigterm()
    # moto's server in a process of its own, as a bucket is on another machine: in this one
    # it would share the interpreter's lock with the export it serves.
    server = S3Server()
    moto = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(server.port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        answering(moto, server.endpoint_url, "moto_server")
        bucket = server.new_bucket()
        os.environ.update(server.env(bucket))
        measure(server, bucket, args)
    finally:
        moto.terminate()
        moto.wait(10)


def measure(server, bucket: str, args: argparse.Namespace) -> None:
    import shutil

    import httpx

    from bench.bench_dataset import _mask_variants, make_batch
    from bench.common import throwaway_django

    data = throwaway_django()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log
    logging.getLogger("segmentation").setLevel(logging.WARNING)  # a line per export
    try:
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from segmentation import datasets, stored_exports
        from segmentation.models import Batch

        call_command("migrate", verbosity=0)
        assert stored_exports.in_bucket()
        # The rows as bench_dataset makes them, their files on a scratch folder, then put in
        # the bucket under the same names.
        scratch = Path(data) / "scratch"
        (scratch / "variants").mkdir(parents=True)
        variants = _mask_variants(scratch / "variants")
        owner = get_user_model().objects.create_user("bench")
        batch = Batch.objects.get(
            pk=make_batch(owner, args.runs, args.masks, variants, scratch, "large")
        )
        files = list((scratch / "masks").rglob("*.png"))
        client = server.client()
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda p: client.upload_file(str(p), bucket, str(p.relative_to(scratch))),
                    files,
                )
            )
        print(
            f"Dataset of {args.runs:,} runs x {args.masks} masks, masks in a bucket (moto on "
            f"127.0.0.1; {len(files):,} PNGs put in {time.perf_counter() - started:.1f} s), "
            f"SQLite; median of {args.repeat}.\n"
        )
        header = (
            f"{'format':10} {'read ahead':>10} {'MB':>5} {'streamed s':>11} {'to bucket s':>12} "
            f"{'ratio':>6} {'download s':>11}"
        )
        print(header)
        print("-" * len(header))
        options = datasets.Options()
        cases = [(f, n) for f in args.formats.split(",") for n in args.read_ahead]
        for fmt, read_ahead in cases:
            datasets.READ_AHEAD = read_ahead
            streamed, kept, fetched = [], [], []
            size = 0
            for _ in range(args.repeat):
                t = time.perf_counter()
                size = sum(len(c) for c in datasets.stream(batch, fmt, options))
                streamed.append(time.perf_counter() - t)
                t = time.perf_counter()
                response = stored_exports.keep(
                    "batches",
                    batch.pk,
                    filename=datasets.download_name(batch, fmt),
                    content_type=datasets.FORMATS[fmt],
                    content=stored_exports.chunks_file(datasets.stream(batch, fmt, options)),
                    log="bench",
                )
                kept.append(time.perf_counter() - t)
                t = time.perf_counter()
                body = httpx.get(response["Location"], timeout=120).content
                fetched.append(time.perf_counter() - t)
                assert len(body) == size, (len(body), size)
            s, k, f = (statistics.median(v) for v in (streamed, kept, fetched))
            print(
                f"{fmt:10} {read_ahead:>10} {size / 1e6:5.1f} {s:11.2f} {k:12.2f} {k / s:6.2f} "
                f"{f:11.2f}"
            )
        print(f"\n(settings.SAM3WEB_S3_URL_TTL = {settings.SAM3WEB_S3_URL_TTL} s)")
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
