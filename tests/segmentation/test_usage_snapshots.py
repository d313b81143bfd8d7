"""The usage page keeps the figures of settled months (UsageMonth): they must always equal the
figures added up from the runs themselves, whatever changes the runs afterwards."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import ApiToken
from segmentation import runs, tasks
from segmentation.models import Batch, Run, UsageMonth
from segmentation.usage import Totals, Usage, first_unsettled, month_starts, usage_totals
from tests.factories import stored_image
from tests.segmentation.test_usage import make_run as usage_run

pytestmark = pytest.mark.django_db

S = Run.Status


def make_run(picture, owner, status, created, **fields) -> Run:
    return usage_run(picture, owner, status, created=created, **fields)


def reference(starts: list[dt.datetime]) -> Usage:
    """The page's figures, added up in Python run by run (as Run.cost_shown has it)."""
    index = {start: i for i, start in enumerate(starts[:-1])}
    usage = Usage(months=[Totals() for _ in starts[:-1]], year={}, all_time={})
    for run in Run.objects.all():
        t = Totals(
            runs=1,
            succeeded=int(run.status == S.SUCCEEDED),
            failed=int(run.status == S.FAILED),
            known=run.cost or Decimal(0),
            estimated_runs=int(run.cost is None and run.status not in Run.NOT_BILLED),
            runflow_ms=run.duration_ms or 0,
            batch_runs=int(run.batch_id is not None),
        )
        owner, token = run.owner_id, run.token_id
        usage.all_time[owner] = usage.all_time.get(owner, Totals()) + t
        usage.all_time_tokens[token] = usage.all_time_tokens.get(token, Totals()) + t
        i = index.get(month_starts(run.created_at, 1)[0])
        if i is not None and run.created_at < starts[-1]:
            usage.months[i] += t
            usage.year[owner] = usage.year.get(owner, Totals()) + t
            usage.year_tokens[token] = usage.year_tokens.get(token, Totals()) + t
    return usage


def figures() -> Usage:
    return usage_totals(month_starts(timezone.now()))


def check() -> None:
    """The figures (kept months or not) equal the reference; and again once kept."""
    starts = month_starts(timezone.now())
    expected = reference(starts)
    assert usage_totals(starts) == expected
    assert usage_totals(starts) == expected


@pytest.fixture
def picture(owner):
    return stored_image("cat.jpg")


@pytest.fixture
def history(picture, owner, teammate) -> list[Run]:
    return make_history(picture, owner, teammate)


def make_history(picture, owner, teammate) -> list[Run]:
    """Runs over two years, several around local month boundaries, some through an API
    token, one in a batch."""
    token, _ = ApiToken.issue(teammate, "nightly")
    batch = Batch.objects.create(owner=owner, concepts=["cat"], state=Batch.State.RUNNING)
    starts = month_starts(timezone.now(), 26)
    made = []
    for i, start in enumerate(starts[:-1]):
        if i % 3 == 2:
            continue  # months without runs, too
        made += [
            make_run(picture, owner, S.SUCCEEDED, start, cost="0.005", duration_ms=1000 + i),
            make_run(picture, owner, S.SUCCEEDED, start - dt.timedelta(minutes=1)),  # estimate
            make_run(picture, teammate, S.FAILED, start + dt.timedelta(days=2), cost="0"),
            make_run(picture, teammate, S.NOT_SUBMITTED, start + dt.timedelta(hours=5)),
            make_run(picture, teammate, S.SUCCEEDED, start, cost="0.0042", token=token),
            make_run(picture, owner, S.STALE, start + dt.timedelta(days=9)),
        ]
    Run.objects.filter(pk=made[0].pk).update(batch=batch)
    return made


def settled_month() -> dt.datetime:
    """Three months ago: settled whatever the day (settle days are fewer than a month)."""
    return month_starts(timezone.now())[-5]


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Auckland", "America/Los_Angeles"])
@pytest.mark.parametrize("settle_days", [0, 2])
def test_kept_months_give_the_same_figures_as_the_runs(
    settings, picture, owner, teammate, zone: str, settle_days: int
) -> None:
    settings.TIME_ZONE = zone
    settings.SAM3WEB_USAGE_SETTLE_DAYS = settle_days
    # Made in the zone under test, so the runs sit on its month boundaries.
    assert make_history(picture, owner, teammate)
    check()
    kept = UsageMonth.objects.filter(rows__isnull=False).count()
    unsettled = first_unsettled(timezone.now())
    # Every settled month since the first run's (a minute before the oldest 1st made here).
    assert kept == len([m for m in month_starts(timezone.now(), 27)[:-1] if m < unsettled])


def test_a_month_kept_under_another_time_zone_is_not_used(settings, history) -> None:
    check()
    utc_rows = UsageMonth.objects.count()
    settings.TIME_ZONE = "Pacific/Auckland"
    check()
    assert UsageMonth.objects.count() > utc_rows  # Auckland's months are rows of their own


def test_deleting_a_run_of_a_settled_month_changes_the_figures(history) -> None:
    before = figures()
    check()
    run = next(
        r
        for r in history
        if settled_month() <= r.created_at < month_starts(timezone.now())[-4]
        and r.status == S.SUCCEEDED
        and r.cost == Decimal("0.005")
    )
    assert runs.delete_run(run.pk)
    after = figures()
    assert after.all_time[run.owner_id].runs == before.all_time[run.owner_id].runs - 1
    assert after.months[-4].known == before.months[-4].known - Decimal("0.005")
    check()


def test_a_cost_arriving_late_for_a_settled_month_counts(history) -> None:
    check()
    starts = month_starts(timezone.now())
    run = next(
        r
        for r in history
        if starts[0] <= r.created_at < settled_month()
        and r.status == S.SUCCEEDED
        and r.cost is None
    )
    i = starts.index(month_starts(run.created_at, 1)[0])
    before = figures().months[i]
    # As the engine stores a cost fetched after the result, then tells the run's followers.
    with transaction.atomic():
        Run.objects.filter(pk=run.pk).update(cost=Decimal("0.0031"))
        tasks.changed(run)
    after = figures().months[i]
    assert after.estimated_runs == before.estimated_runs - 1
    assert after.known == before.known + Decimal("0.0031")
    check()


def test_bulk_changes_by_any_path_count(history, teammate, owner) -> None:
    check()
    # A run put in a batch, a run re-dated, and a teammate's account deleted (their runs stay,
    # owner NULL): none of these goes through the app's signals.
    old = [r for r in history if r.created_at < settled_month()]
    batch = Batch.objects.create(owner=owner, concepts=["dog"], state=Batch.State.RUNNING)
    Run.objects.filter(pk=old[1].pk).update(batch=batch)
    check()
    Run.objects.filter(pk=old[2].pk).update(created_at=old[2].created_at - dt.timedelta(days=40))
    check()
    get_user_model().objects.filter(pk=teammate.pk).delete()
    assert None in figures().all_time
    check()


def test_a_second_view_reads_no_runs_of_settled_months(signed_in: Client, history) -> None:
    first = signed_in.get("/usage/?period=all")
    assert first.status_code == 200
    bound = first_unsettled(timezone.now())
    with CaptureQueriesContext(connection) as queries:
        second = signed_in.get("/usage/?period=all")
    assert second.context["all_time"] == first.context["all_time"]
    on_runs = [q["sql"] for q in queries.captured_queries if '"segmentation_run"' in q["sql"]]
    assert len(on_runs) == 1
    assert f""""created_at" >= '{bound.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}""" in on_runs[0]


def test_the_first_view_keeps_every_settled_month_in_a_fixed_number_of_queries(
    history,
) -> None:
    with CaptureQueriesContext(connection) as queries:
        figures()
    # Recent runs, kept months, claim, the settled months' aggregate, store; on PostgreSQL two
    # more for whether a transaction older than the claim is still running.
    assert len(queries.captured_queries) <= (7 if connection.vendor == "postgresql" else 5)
    assert not UsageMonth.objects.filter(rows__isnull=True).exists()


def test_a_month_claimed_by_another_view_is_still_added_up(history) -> None:
    month = settled_month()
    UsageMonth.objects.create(month=month, ends=month_starts(month, 1)[-1])  # rows NULL
    check()
    assert UsageMonth.objects.get(month=month).rows is not None


@pytest.mark.django_db(transaction=True)
def test_a_change_still_uncommitted_when_a_month_is_first_added_up_is_not_lost(history) -> None:
    """On PostgreSQL a run can change in a transaction that began before its month's row was
    made (so no trigger marked the row) and commits after the runs were read: those figures
    must not be kept."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one writer at a time")
    starts = month_starts(timezone.now())
    run = next(r for r in history if starts[0] <= r.created_at < settled_month() and r.cost)
    changed, release = threading.Event(), threading.Event()

    def change_and_hold() -> None:
        try:
            with transaction.atomic():
                Run.objects.filter(pk=run.pk).update(cost=Decimal("7.0000"))
                changed.set()
                release.wait(30)
        finally:
            connection.close()

    other = threading.Thread(target=change_and_hold)
    other.start()
    assert changed.wait(30)
    try:
        first = figures()  # the month's row is made now, its runs read without the change
        assert UsageMonth.objects.exists()
    finally:
        release.set()
        other.join(30)
    assert sum(m.known for m in first.months) < Decimal(7)  # the change was not seen then
    check()  # ... and is now: the month was not kept with the figures that missed it
    assert UsageMonth.objects.filter(rows__isnull=False).exists()  # kept since
