"""The history page: the team's runs as cards, filters, search, sorts, keyset pages, live cards,
and bad input in every parameter (each answered with a message, never a 500)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from html import unescape
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from segmentation import history
from segmentation.models import Run, SourceImage
from tests.factories import stored_image

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def picture(owner) -> SourceImage:
    return stored_image("cat.jpg")


def make(owner: Any, image: SourceImage, *, minutes_ago: int, **fields: Any) -> Run:
    """A run created `minutes_ago` before NOW, with the given input/status/result fields."""
    data = {"prompt": fields.pop("prompt", "cat")}
    if points := fields.pop("points", None):
        data["point_prompts"] = points
    if boxes := fields.pop("boxes", None):
        data["box_prompts"] = boxes
    fields.setdefault("status", Run.Status.SUCCEEDED)
    run = Run.objects.create(owner=owner, image=image, input=data, **fields)
    Run.objects.filter(pk=run.pk).update(created_at=NOW - dt.timedelta(minutes=minutes_ago))
    run.refresh_from_db()
    return run


def shown(response) -> list[str]:
    """The run ids on the page, in order."""
    return re.findall(r'id="run-([0-9a-f-]{36})"', response.content.decode())


def link(response, rel: str) -> str | None:
    m = re.search(rf'<a href="([^"]+)" rel="{rel}"', response.content.decode())
    return unescape(m.group(1)) if m else None


def linked(response, rel: str) -> str:
    """The address of a page link the page must have."""
    url = link(response, rel)
    assert url is not None, f'no rel="{rel}" link'
    return url


def test_the_page_shows_everyones_runs_as_cards(
    signed_in: Client, owner, teammate, picture
) -> None:
    mine = make(
        owner,
        picture,
        minutes_ago=5,
        prompt="coffee cup",
        duration_ms=1234,
        cost=Decimal("0.005"),
        mask_count=3,
    )
    theirs = make(
        teammate,
        picture,
        minutes_ago=1,
        prompt="",
        points=[{"x": 1, "y": 2, "label": 1}],
        status=Run.Status.RUNNING,
    )
    response = signed_in.get("/runs/")
    assert response.status_code == 200
    assert shown(response) == [str(theirs.pk), str(mine.pk)]  # newest first
    html = response.content.decode()
    card = html[html.index(f'id="run-{mine.pk}"') :]
    assert "coffee cup" in card and "ada" in card and "1,234 ms" in card and "$0.005" in card
    assert "3 masks" in card
    # A running run shows the list price, marked as an estimate, and the page polls its card.
    assert "~$0.005" in html and "est." in html
    assert f"/runs/live/?ids={theirs.pk}" in html
    assert "Points and boxes" in html and "1 point" in html
    assert "2 runs." in html


def test_filters_narrow_the_runs(signed_in: Client, owner, teammate, picture) -> None:
    text = make(owner, picture, minutes_ago=50, prompt="red wheel")
    points = make(
        teammate, picture, minutes_ago=40, prompt="", points=[{"x": 1, "y": 1, "label": 1}]
    )
    boxes = make(
        teammate,
        picture,
        minutes_ago=30,
        prompt="Wheel",
        boxes=[{"x_min": 0, "y_min": 0, "x_max": 5, "y_max": 5}],
        status=Run.Status.FAILED,
    )
    old = make(owner, picture, minutes_ago=60 * 24 * 40, prompt="bicycle")

    def ids(query: str) -> set[str]:
        response = signed_in.get("/runs/?" + query)
        assert response.status_code == 200, response.content.decode()[:500]
        return set(shown(response))

    assert ids("q=WHEEL") == {str(text.pk), str(boxes.pk)}  # case-insensitive, anywhere
    assert ids("status=failed") == {str(boxes.pk)}
    assert ids("status=failed&status=succeeded") == {str(r.pk) for r in (text, points, boxes, old)}
    assert ids("owner=grace") == {str(points.pk), str(boxes.pk)}
    assert ids("mine=on") == {str(text.pk), str(old.pk)}
    assert ids("mine=on&owner=grace") == {str(text.pk), str(old.pk)}  # "mine" wins
    assert ids("kind=text") == {str(text.pk), str(boxes.pk), str(old.pk)}
    assert ids("kind=points") == {str(points.pk)}
    assert ids("kind=boxes") == {str(boxes.pk)}
    day = (NOW - dt.timedelta(days=40)).date().isoformat()
    assert ids(f"since={day}&until={day}") == {str(old.pk)}
    assert ids(f"until={day}") == {str(old.pk)}
    assert ids(f"since={NOW.date().isoformat()}") == {str(r.pk) for r in (text, points, boxes)}
    assert ids("q=wheel&owner=grace&kind=boxes&status=failed") == {str(boxes.pk)}


def test_sorts(signed_in: Client, owner, picture) -> None:
    a = make(owner, picture, minutes_ago=3, duration_ms=500, mask_count=1)
    b = make(
        owner, picture, minutes_ago=2, duration_ms=None, mask_count=0, status=Run.Status.QUEUED
    )
    c = make(owner, picture, minutes_ago=1, duration_ms=900, mask_count=7)
    order = {
        "new": [c, b, a],
        "old": [a, b, c],
        "slow": [c, a, b],  # runs without a duration come last either way
        "fast": [a, c, b],
        "masks": [c, a, b],
    }
    for sort, runs in order.items():
        assert shown(signed_in.get(f"/runs/?sort={sort}")) == [str(r.pk) for r in runs], sort


@pytest.mark.parametrize("sort", list(history.SORTS))
def test_keyset_pages_visit_every_run_once_both_ways(
    signed_in: Client, owner, picture, sort: str
) -> None:
    # 24 per page: 60 runs make three pages; equal durations and mask counts force the id
    # tie-break, and a third of the runs have no duration at all.
    runs = [
        make(
            owner,
            picture,
            minutes_ago=i // 2,
            mask_count=i % 3,
            duration_ms=None if i % 3 == 0 else 100 * (i % 4),
        )
        for i in range(60)
    ]
    seen: list[str] = []
    pages: list[list[str]] = []
    url: str | None = f"/runs/?sort={sort}"
    while url:
        response = signed_in.get(url)
        assert response.status_code == 200
        pages.append(shown(response))
        seen += pages[-1]
        url = link(response, "next")
    assert len(seen) == len(set(seen)) == len(runs)
    assert [len(p) for p in pages] == [24, 24, 12]
    # ... and back again: each "Newer" link shows exactly the page before.
    response = signed_in.get(f"/runs/?sort={sort}")
    for _ in range(2):
        response = signed_in.get(linked(response, "next"))
    assert shown(response) == pages[2]
    back = signed_in.get(linked(response, "prev"))
    assert shown(back) == pages[1]
    first = signed_in.get(linked(back, "prev"))
    assert shown(first) == pages[0] and link(first, "prev") is None


def test_a_page_link_keeps_the_filters(signed_in: Client, owner, teammate, picture) -> None:
    for i in range(60):
        make(owner if i % 2 else teammate, picture, minutes_ago=i, prompt=f"cat {i}")
    response = signed_in.get("/runs/?owner=grace&q=cat")
    nxt = link(response, "next")
    assert nxt and "owner=grace" in nxt and "q=cat" in nxt
    rest = signed_in.get(nxt)
    assert len(shown(response)) + len(shown(rest)) == 30
    assert all(Run.objects.get(pk=i).owner == teammate for i in shown(rest))


def test_counts_stop_at_the_cap(signed_in: Client, owner, picture, monkeypatch) -> None:
    monkeypatch.setattr(history, "COUNT_CAP", 5)
    for i in range(7):
        make(owner, picture, minutes_ago=i)
    assert "More than 5 runs" in signed_in.get("/runs/").content.decode()
    assert "0 runs match." in signed_in.get("/runs/?q=nothing-like-it").content.decode()


NONSENSE = [
    ("status=exploded", "status", "Select a valid choice"),
    ("owner=nobody-here", "owner", "no teammate with that name"),
    ("kind=circles", "kind", "Select a valid choice"),
    ("sort=random()", "sort", "Select a valid choice"),
    ("since=yesterday", "since", "Enter a valid date"),
    ("since=2026-13-45", "since", "Enter a valid date"),
    ("since=2026-11-10&until=2026-11-01", "until", "end date is before the start date"),
    ("q=" + "x" * 10_000, "q", "at most 200 characters"),
]


@pytest.mark.parametrize(("query", "field", "message"), NONSENSE)
def test_nonsense_filters_get_a_message_beside_the_field(
    signed_in: Client, owner, picture, query: str, field: str, message: str
) -> None:
    run = make(owner, picture, minutes_ago=1)
    response = signed_in.get("/runs/?" + query)
    assert response.status_code == 400
    html = response.content.decode()
    start = html.index(f'id="field-{field}"' if field != "status" else "<legend>Status")
    block = html[start : html.index("</div>", start)]
    assert message.lower() in unescape(block).lower()
    # The bad filter is left out; the page still lists runs.
    assert shown(response) == [str(run.pk)]


@pytest.mark.parametrize(
    "q", ["' OR 1=1 --", '"; DROP TABLE segmentation_run; --', "%", "_", "\\", "100%_cat", "\x00"]
)
def test_sql_looking_search_text_is_just_text(signed_in: Client, owner, picture, q: str) -> None:
    make(owner, picture, minutes_ago=1, prompt="cat")
    # PostgreSQL cannot store a NUL at all (the search refuses it: 400).
    literal = make(owner, picture, minutes_ago=2, prompt=f"a {q} b".replace("\x00", ""))
    response = signed_in.get("/runs/", {"q": q})
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert shown(response) == [str(literal.pk)]
    assert Run.objects.count() == 2


@pytest.mark.parametrize(
    "cursor", ["garbage", "e30", "W251bGwsIngiXQ", "A" * 5000, "WyIyMDI2IiwiMSJd", "%00"]
)
def test_a_broken_page_link_shows_the_first_page(signed_in: Client, owner, picture, cursor) -> None:
    run = make(owner, picture, minutes_ago=1)
    for param in ("after", "before"):
        response = signed_in.get("/runs/", {param: cursor})
        assert response.status_code == 400
        assert "out of date or broken" in response.content.decode()
        assert shown(response) == [str(run.pk)]


def test_htmx_gets_only_the_results(signed_in: Client, owner, picture) -> None:
    make(owner, picture, minutes_ago=1, prompt="zebra")
    response = signed_in.get(
        "/runs/?q=zebra", headers={"HX-Request": "true", "HX-Target": "history-results"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="history-results">')
    assert "<html" not in html and "zebra" in html


def test_live_cards_update_and_polling_stops_when_settled(
    signed_in: Client, owner, picture
) -> None:
    run = make(owner, picture, minutes_ago=1, status=Run.Status.RUNNING)
    response = signed_in.get(f"/runs/live/?ids={run.pk}")
    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="run-{run.pk}" hx-swap-oob="true"' in html and "Running" in html
    assert "every 2s" in html

    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, mask_count=2)
    response = signed_in.get(f"/runs/live/?ids={run.pk}")
    html = response.content.decode()
    assert response.status_code == 286  # htmx: stop polling
    assert "Succeeded" in html and "2 masks" in html and "every 2s" not in html


def test_live_cards_refuse_bad_ids(signed_in: Client) -> None:
    response = signed_in.get("/runs/live/?ids=not-a-uuid")
    assert response.status_code == 400
    assert signed_in.get("/runs/live/?ids=00000000-0000-0000-0000-000000000000").status_code == 286


def test_the_page_and_its_parts_need_a_signed_in_teammate(client: Client) -> None:
    for path in ("/runs/", "/runs/live/?ids=x", "/runs/?q=a"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


# SQLite's EXPLAIN QUERY PLAN; test_history_plans.py reads PostgreSQL's.
sqlite_plans = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's plans")


@sqlite_plans
def test_the_query_uses_an_index_not_a_scan(owner, picture) -> None:
    """The first page of each sort is read from an index in order: no temporary B-tree for
    ORDER BY, so the database stops after one page."""
    from django.db import connection

    make(owner, picture, minutes_ago=1)
    for key, sort in history.SORTS.items():
        qs = Run.objects.order_by(*history._ordering(sort, True))[:25]
        sql, params = qs.query.sql_with_params()
        with connection.cursor() as cur:
            cur.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = " ".join(str(row[-1]) for row in cur.fetchall())
        assert "USE TEMP B-TREE" not in plan, (key, plan)
        assert "INDEX" in plan, (key, plan)


RUN_PATHS = [
    "/runs/{}/",
    "/runs/{}/status/",
    "/runs/{}/thumb.jpg",
    "/runs/{}/overlay.png",
    "/runs/{}/viewer.json",
    "/runs/{}/masks/1.png",
    "/runs/{}/export/json",
    "/runs/{}/delete/",
    "/runs/{}/reuse/",
]
BAD_IDS = [
    "00000000-0000-0000-0000-000000000000",  # well formed, no such run
    "not-a-uuid",
    "12345",
    "' OR 1=1 --",
    "0" * 500,
]


@pytest.mark.parametrize("path", RUN_PATHS)
@pytest.mark.parametrize("run_id", BAD_IDS)
def test_unknown_or_malformed_run_ids_are_404(signed_in: Client, path: str, run_id: str) -> None:
    response = signed_in.get(path.format(run_id))
    assert response.status_code == 404


@pytest.mark.parametrize("action", ["share", "unshare", "resubmit", "check-again", "retry-copy"])
@pytest.mark.parametrize("run_id", BAD_IDS)
def test_actions_on_unknown_or_malformed_ids_are_404(
    signed_in: Client, action: str, run_id: str
) -> None:
    assert signed_in.post(f"/runs/{run_id}/{action}/").status_code == 404


@sqlite_plans
@pytest.mark.parametrize("key", list(history.SORTS))
@pytest.mark.parametrize("forward", [True, False])
def test_a_later_page_starts_its_index_scan_at_the_cursor(owner, picture, key, forward) -> None:
    """Page 4,000 costs what page 1 costs: the cursor is a range on the sort's index, so the
    database starts reading there instead of walking to it from the top."""
    from django.db import connection

    run = make(owner, picture, minutes_ago=1)
    sort = history.SORTS[key]
    value, run_id = history.decode_cursor(history.encode_cursor(run, sort), sort)
    qs = Run.objects.filter(history._beyond(sort, value, run_id, forward)[0])
    sql, params = qs.order_by(*history._ordering(sort, forward))[:25].query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = " ".join(str(row[-1]) for row in cur.fetchall())
    assert plan.startswith("SEARCH") and f"{sort.field}" in plan and "?" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
