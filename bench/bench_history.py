"""History page figures at 1,000 and 100,000 runs: server time of the first page, a filtered
page, a sorted page and the deepest page (reached by following the "Older" links), the usage
page, and the bytes a browser transfers for one history page.

    .venv/bin/python bench/bench_history.py [--small 1000] [--large 100000] [--repeat 40]

Runs against a throwaway data folder (SQLite database and media), never the app's own. The
runs come from segmentation.seed with fast=True (every run has its own mask, overlay and
thumbnail files, hard-linked to a few pre-rendered variants per image). Times are the Django
test client's GET, in process, signed in: the view, its queries and the template, without a
network or a web server."""

from __future__ import annotations

import argparse
import atexit
import gzip
import html
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import pct, throwaway_django  # noqa: E402
from tests.sample_images import IMAGES  # noqa: E402

DATA = throwaway_django()
# 100,000 runs make a database of about 400 MB: remove the throwaway folder when done.
atexit.register(shutil.rmtree, DATA, ignore_errors=True)

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.staticfiles import finders  # noqa: E402
from django.core.files.storage import default_storage  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from segmentation.models import Run  # noqa: E402
from segmentation.seed import seed_runs  # noqa: E402

NEXT = re.compile(
    r'<a\b[^>]*\bhref="([^"]+)"[^>]*\brel="next"|<a\b[^>]*\brel="next"[^>]*\bhref="([^"]+)"'
)
IMG = re.compile(r'<img\b[^>]*\bsrc="([^"]+)"')
ASSET = re.compile(r'<(?:link\b[^>]*\brel="stylesheet"[^>]*\bhref|script\b[^>]*\bsrc)="([^"]+)"')

CASES = [
    ("first page", "/runs/"),
    ("filtered: q=cat, succeeded, points", "/runs/?q=cat&status=succeeded&kind=points"),
    ("filtered: one teammate, masks first", "/runs/?owner=bob&sort=masks"),
    ("sorted: slowest first", "/runs/?sort=slow"),
]


def get(client: Client, url: str) -> tuple[float, str]:
    start = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - start) * 1000
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    return elapsed, response.content.decode()


def timed(client: Client, url: str, repeat: int) -> list[float]:
    for _ in range(3):  # warm up: template loading, the database's page cache
        get(client, url)
    return [get(client, url)[0] for _ in range(repeat)]


def next_link(page: str) -> str | None:
    match = NEXT.search(page)
    return html.unescape(match.group(1) or match.group(2)) if match else None


def walk(client: Client, url: str) -> tuple[str, int, list[float]]:
    """Follow rel="next" from `url` to the last page: (its URL, pages walked, each GET's ms)."""
    pages, times = 1, []
    ms, page = get(client, url)
    times.append(ms)
    while (following := next_link(page)) is not None:
        url = following
        ms, page = get(client, url)
        times.append(ms)
        pages += 1
    return url, pages, times


def measure(client: Client, repeat: int) -> tuple[dict[str, list[float]], int]:
    """Server times per case, and how many pages deep the last page is."""
    results = {label: timed(client, url, repeat) for label, url in CASES}
    last, pages, walk_ms = walk(client, "/runs/")
    results["deep: the last page"] = timed(client, last, repeat)
    results["every page of the walk to it"] = walk_ms
    results["usage page (/usage/)"] = timed(client, "/usage/", repeat)
    return results, pages


def page_bytes(client: Client) -> list[tuple[str, int]]:
    """What a browser fetches for the first history page: the HTML, every image it shows
    (the run thumbnails), and the style sheets and scripts it links."""
    page = client.get("/runs/").content
    text = page.decode()
    thumbs = 0
    for src in IMG.findall(text):
        response = client.get(html.unescape(src))
        assert response.status_code == 200, src
        # A thumbnail is a FileResponse: getvalue() reads its streamed body in full.
        assert response.streaming, src
        thumbs += len(response.getvalue())
    assets = 0
    for href in ASSET.findall(text):
        path = html.unescape(href).split("?")[0].removeprefix(settings.STATIC_URL)
        found = finders.find(path.lstrip("/"))
        assert found, href
        assets += Path(found).stat().st_size
    return [
        ("HTML", len(page)),
        ("  the same HTML gzip-compressed, if the server compresses", len(gzip.compress(page))),
        (f"{len(IMG.findall(text))} thumbnails", thumbs),
        (f"{len(ASSET.findall(text))} style sheets and scripts", assets),
        ("in all (HTML uncompressed; the favicon not counted)", len(page) + thumbs + assets),
    ]


def thumbnail_sizes() -> list[int]:
    names = Run.objects.exclude(thumbnail="").values_list("thumbnail", flat=True)
    return [default_storage.size(name) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    settings.ALLOWED_HOSTS = ["testserver"]
    print(
        f"sam3web history benchmark · {args.repeat} requests per figure · medians and p95\n"
        "(in-process Django test client, signed in, SQLite; runs made by segmentation.seed)\n"
    )

    started = time.perf_counter()
    seed_runs(args.small, users=5, seed=0, images_dir=IMAGES, fast=True)
    seeded_small = time.perf_counter() - started
    client = Client()
    client.force_login(get_user_model().objects.get(username="alice"))
    small, small_pages = measure(client, args.repeat)

    started = time.perf_counter()
    seed_runs(args.large - args.small, users=5, seed=0, images_dir=IMAGES, fast=True)
    seeded_large = time.perf_counter() - started
    large, large_pages = measure(client, args.repeat)
    transferred = page_bytes(client)
    thumbs = thumbnail_sizes()

    more = args.large - args.small
    print(
        f"Seeding: {args.small:,} runs in {seeded_small:.1f} s; {more:,} more in "
        f"{seeded_large:.1f} s ({more / seeded_large:,.0f} runs/s; every run's masks, overlay "
        "and thumbnail are files of its own, hard-linked to pre-rendered variants)\n"
    )
    n1, n2 = f"{args.small:,} runs", f"{args.large:,} runs"
    print(f"{'History page, server time (ms)':<40} {n1:>17}   {n2:>17}   ratio of")
    print(f"{'':<40} {'median':>8} {'p95':>8}   {'median':>8} {'p95':>8}   medians")
    for label, a in small.items():
        b = large[label]
        ratio = statistics.median(b) / statistics.median(a)
        print(
            f"  {label:<38} {statistics.median(a):8.1f} {pct(a, 0.95):8.1f}   "
            f"{statistics.median(b):8.1f} {pct(b, 0.95):8.1f}   {ratio:6.2f}×"
        )
    print(
        f"  (the last page is page {small_pages:,} at {args.small:,} runs and page "
        f"{large_pages:,} at {args.large:,}, reached by following rel=next links)"
    )
    print(
        f"\nRun thumbnails ({len(thumbs):,} at {args.large:,} runs): median "
        f"{statistics.median(thumbs) / 1024:.1f} KiB, p95 {pct(thumbs, 0.95) / 1024:.1f} KiB"
    )
    print(f"\nTransferred for the first history page ({args.large:,} runs):")
    for label, size in transferred:
        print(f"  {label:<56} {size / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
