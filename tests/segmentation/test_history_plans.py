"""The history's queries on both databases: a prompt search ignores the case of the same letters
on SQLite and PostgreSQL, runs made at the same instant page in the same order, and (on
PostgreSQL, at a few thousand runs) the page queries read an index rather than the whole
run table."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from segmentation import history
from segmentation.models import Batch, BatchItem, BatchRun, Run, SourceImage
from segmentation.seed import seed_runs
from tests.factories import stored_image
from tests.sample_images import IMAGES

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def shown(response: Any) -> list[str]:
    assert response.status_code == 200, response.content[:300]
    return re.findall(r'id="run-([0-9a-f-]{36})"', response.content.decode())


def next_url(response: Any) -> str | None:
    m = re.search(r'<a href="([^"]+)" rel="next"', response.content.decode())
    return unescape(m.group(1)) if m else None


def make(owner: Any, image: SourceImage, prompt: str, when: dt.datetime, **fields: Any) -> Run:
    fields.setdefault("status", Run.Status.SUCCEEDED)
    run = Run.objects.create(owner=owner, image=image, input={"prompt": prompt}, **fields)
    Run.objects.filter(pk=run.pk).update(created_at=when)
    return run


PROMPTS = ["Black Cat", "cat", "CAT food", "dog", "Écharpe", "écharpe", "100% cotton", "1000"]


@pytest.mark.parametrize(
    ("q", "found"),
    [
        # ASCII letters in any case, on both databases.
        ("cat", {"Black Cat", "cat", "CAT food"}),
        ("CaT", {"Black Cat", "cat", "CAT food"}),
        ("AT F", {"CAT food"}),
        # Other letters as typed: PostgreSQL's upper() would follow its server's locale
        # (and find both here on one server, one on another); SQLite's LIKE never folds them.
        ("écharpe", {"écharpe"}),
        ("ÉCHARPE", {"Écharpe"}),
        ("CHARPE", {"Écharpe", "écharpe"}),
        # LIKE's wildcards are the characters themselves.
        ("0%", {"100% cotton"}),
        ("1_0", set()),
    ],
)
def test_a_prompt_search_ignores_the_same_case_on_every_database(
    signed_in: Client, owner: Any, q: str, found: set[str]
) -> None:
    image = stored_image("cat.jpg")
    runs = {p: make(owner, image, p, NOW - dt.timedelta(minutes=i)) for i, p in enumerate(PROMPTS)}
    ids = set(shown(signed_in.get("/runs/", {"q": q})))
    assert ids == {str(runs[p].pk) for p in found}


@pytest.mark.parametrize("sort", list(history.SORTS))
def test_runs_made_at_the_same_instant_page_in_id_order(
    signed_in: Client, owner: Any, sort: str
) -> None:
    """Equal sort values (one created_at, one duration, one mask count) are ordered by id, the
    unique key, in the same direction on both databases: the pages split the runs exactly, in
    the order of the ids' text (PostgreSQL's uuid order is the order of their hex digits, as
    SQLite stores them)."""
    image = stored_image("cat.jpg")
    runs = [make(owner, image, "cat", NOW, duration_ms=500, mask_count=2) for _ in range(50)]
    seen: list[str] = []
    url: str | None = f"/runs/?sort={sort}"
    while url:
        response = signed_in.get(url)
        seen += shown(response)
        url = next_url(response)
    ids = sorted(str(r.pk) for r in runs)
    descending = history.SORTS[sort].descending
    assert seen == (ids[::-1] if descending else ids)


# --- PostgreSQL's plans at a few thousand runs --------------------------------------------------


@pytest.fixture
def seeded(tmp_path: Path, owner: Any) -> dict[str, Any]:
    if connection.vendor != "postgresql":
        pytest.skip("plans are PostgreSQL's (test_history.py reads SQLite's)")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("cat.jpg", "coffee.jpg"):
        shutil.copy(IMAGES / name, photos / name)
    seed_runs(4000, users=5, seed=1, images_dir=photos, shared=True, now=NOW)
    batch = Batch.objects.create(owner=owner, name="plans", concepts=["cat"])
    item = BatchItem.objects.create(batch=batch, position=0, name="cat.jpg")
    picked = Run.objects.order_by("id")[:30]
    BatchRun.objects.bulk_create(
        BatchRun(batch=batch, item=item, concept=f"cat {i}", run=run)
        for i, run in enumerate(picked)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    # The run just newer than the last page, so ?after= shows the deepest page.
    pages = -(-Run.objects.count() // history.PER_PAGE)
    above = (pages - 1) * history.PER_PAGE
    edge = Run.objects.order_by("created_at", "id")[Run.objects.count() - above]
    return {"batch": batch, "deep": history.encode_cursor(edge, history.SORTS["new"])}


def run_scans(plan: dict[str, Any]) -> list[str]:
    """Every node of the plan that reads the run table, with how."""
    found = []
    if plan.get("Relation Name") == Run._meta.db_table:
        found.append(f"{plan['Node Type']} {plan.get('Index Name', '')}".strip())
    for child in plan.get("Plans", []):
        found += run_scans(child)
    return found


def main_query_plan(client: Client, url: str) -> tuple[list[str], str]:
    """How the page's main query (the page of runs: ORDER BY ... LIMIT 25) reads the run
    table, from EXPLAIN (FORMAT JSON) of the SQL the view sent; and that SQL."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    table = f'FROM "{Run._meta.db_table}"'
    pages = [
        q["sql"]
        for q in queries.captured_queries
        if table in q["sql"]
        and "ORDER BY" in q["sql"]
        and q["sql"].rstrip().endswith(f"LIMIT {history.PER_PAGE + 1}")
    ]
    assert pages, [q["sql"][:200] for q in queries.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + pages[0])
        (raw,) = cursor.fetchone()
    plan = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
    return run_scans(plan), pages[0]


PAGES = [
    "/runs/",
    "/runs/?q=CAT&kind=text",
    "/runs/?owner=alice",
    "/runs/?status=failed",
    "/runs/?kind=boxes&sort=masks",
    "/runs/?sort=slow",
    "/runs/?sort=fast",
    "/runs/?batch={batch}",
    "/runs/?after={deep}",
]


def test_pages_read_an_index_not_the_whole_run_table(
    signed_in: Client, seeded: dict[str, Any]
) -> None:
    """The first page, filtered pages, sorts (NULL durations included) and the deepest page.
    One test for all: seeding the runs is most of its time."""
    scanned = {}
    for url in PAGES:
        scans, sql = main_query_plan(
            signed_in, url.format(batch=seeded["batch"].pk, deep=seeded["deep"])
        )
        assert scans, f"{url}: the plan does not read the run table"
        if [s for s in scans if s.startswith("Seq Scan")]:
            scanned[url] = explained(sql)
    assert not scanned, "\n\n".join(f"{url}\n{plan}" for url, plan in scanned.items())


def explained(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN ANALYZE " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())
