"""History page figures at a small and a large history (1,000 and 100,000 runs by default):
server time of the first page, filtered pages, a sorted page and the deepest page, the usage
page, and the bytes a browser transfers for one history page.

    .venv/bin/python bench/bench_history.py [--small 1000] [--large 100000] [--repeat 40]
    .venv/bin/python bench/bench_history.py --database postgresql --large 1000000

Runs against a throwaway data folder (SQLite database and media), never the app's own; with
--database postgresql against a throwaway PostgreSQL server started for the run and stopped
after it. The runs come from segmentation.seed: on SQLite with fast=True (every run has its
own mask, overlay and thumbnail files, hard-linked to a few pre-rendered variants per image);
on PostgreSQL with shared=True (the runs of a variant name the same files, and most runs
repeat a template run in SQL: a million runs in minutes), then VACUUM ANALYZE, as autovacuum
would leave a table that size. The deepest page is reached by following the "Older" links up
to --walk-max pages deep; deeper than that, through the link the last page's "Newer" link
would hold (the cursor of the run after it), since walking 40,000 pages takes longer than the
rest together. Times are the Django test client's GET, in process, signed in: the view, its
queries and the template, without a network or a web server."""

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
from bench.common import pct, throwaway_django, throwaway_postgres  # noqa: E402
from tests.sample_images import IMAGES  # noqa: E402


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--walk-max", type=int, default=5000, help="deepest page walked to")
    return parser.parse_args()


# Before Django is configured: the database it connects to comes from DATABASE_URL.
ARGS = arguments()
if ARGS.database == "postgresql":
    throwaway_postgres()
DATA = throwaway_django()
# 100,000 runs make a database of about 400 MB: remove the throwaway folder when done.
atexit.register(shutil.rmtree, DATA, ignore_errors=True)

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.staticfiles import finders  # noqa: E402
from django.core.files.storage import default_storage  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.test import Client  # noqa: E402

from segmentation import history  # noqa: E402
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
    ("filtered: q=COFFEE (any case)", "/runs/?q=COFFEE"),
    ("filtered: one teammate, masks first", "/runs/?owner=bob&sort=masks"),
    ("filtered: failed", "/runs/?status=failed"),
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


def measure(client: Client, repeat: int, walk_max: int) -> tuple[dict[str, list[float]], int]:
    """Server times per case, and how many pages deep the last page is."""
    results = {label: timed(client, url, repeat) for label, url in CASES}
    pages = -(-Run.objects.count() // history.PER_PAGE)
    if pages <= walk_max:
        last, pages, walk_ms = walk(client, "/runs/")
    else:
        # The run just newer than the last page: the page after it is the last page.
        sort = history.SORTS["new"]
        count, above = Run.objects.count(), (pages - 1) * history.PER_PAGE
        edge = Run.objects.order_by("created_at", "id")[count - above]
        last, walk_ms = f"/runs/?after={history.encode_cursor(edge, sort)}", []
        _, page = get(client, last)
        assert next_link(page) is None, "not the last page"
    results["deep: the last page"] = timed(client, last, repeat)
    if walk_ms:
        results["every page of the walk to it"] = walk_ms
    results["usage page (/usage/)"] = timed(client, "/usage/", repeat)
    return results, pages


def seed(n: int) -> float:
    """Seconds to add ``n`` runs (and, on PostgreSQL, to VACUUM ANALYZE after)."""
    started = time.perf_counter()
    if ARGS.database == "postgresql":
        seed_runs(n, users=5, seed=0, images_dir=IMAGES, shared=True)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    else:
        seed_runs(n, users=5, seed=0, images_dir=IMAGES, fast=True)
    return time.perf_counter() - started


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
    """Every run's thumbnail size (a shared file counted once per run that names it)."""
    names = Run.objects.exclude(thumbnail="").values("thumbnail").annotate(runs=Count("pk"))
    sizes = []
    for row in names.order_by():
        sizes += [default_storage.size(row["thumbnail"])] * row["runs"]
    return sizes


def main() -> None:
    args = ARGS
    call_command("migrate", verbosity=0)
    settings.ALLOWED_HOSTS = ["testserver"]
    database = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[args.database]
    print(
        f"sam3web history benchmark · {args.repeat} requests per figure · medians and p95\n"
        f"(in-process Django test client, signed in, {database}; runs made by "
        "segmentation.seed)\n",
        flush=True,
    )

    seeded_small = seed(args.small)
    client = Client()
    client.force_login(get_user_model().objects.get(username="alice"))
    small, small_pages = measure(client, args.repeat, args.walk_max)

    more = args.large - args.small
    seeded_large = seed(more)
    large, large_pages = measure(client, args.repeat, args.walk_max)
    transferred = page_bytes(client)
    thumbs = thumbnail_sizes()

    how = (
        "the runs of a variant share its files; most runs repeat a template run in SQL; "
        "VACUUM ANALYZE included"
        if args.database == "postgresql"
        else "every run's masks, overlay and thumbnail are files of its own, hard-linked to "
        "pre-rendered variants"
    )
    print(
        f"Seeding: {args.small:,} runs in {seeded_small:.1f} s; {more:,} more in "
        f"{seeded_large:.1f} s ({more / seeded_large:,.0f} runs/s; {how})\n"
    )
    n1, n2 = f"{args.small:,} runs", f"{args.large:,} runs"
    print(f"{'History page, server time (ms)':<40} {n1:>17}   {n2:>17}   ratio of")
    print(f"{'':<40} {'median':>8} {'p95':>8}   {'median':>8} {'p95':>8}   medians")
    for label, a in small.items():
        if label not in large:
            continue
        b = large[label]
        ratio = statistics.median(b) / statistics.median(a)
        print(
            f"  {label:<38} {statistics.median(a):8.1f} {pct(a, 0.95):8.1f}   "
            f"{statistics.median(b):8.1f} {pct(b, 0.95):8.1f}   {ratio:6.2f}×"
        )
    reached = (
        "reached by following rel=next links"
        if large_pages <= args.walk_max
        else "the large one through the cursor its Newer link holds"
    )
    print(
        f"  (the last page is page {small_pages:,} at {args.small:,} runs and page "
        f"{large_pages:,} at {args.large:,}, {reached})"
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
