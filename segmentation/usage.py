"""What the team spends: totals per teammate, per API token and per month.

Cost is what the run pages show (Run.cost_shown), summed: Runflow's own figure where it has
arrived, plus the list price (settings.SAM3WEB_PRICE_PER_IMAGE) for each billed run whose
figure has not, counted separately so the page can say how much of a total is estimated.
Runflow does not bill failed, canceled or never-submitted runs.

Everything is added up by the database in one query (COUNT/SUM with FILTER, grouped by owner,
API token and month), never by reading runs into Python: the page costs the same few queries
whatever the size of the history. Months are bucketed by comparing created_at with the month
boundaries (local midnight on the 1st, in settings.TIME_ZONE), computed here as aware
datetimes: exact in any time zone, and plain comparisons in SQL (SQLite's TruncMonth with a
time zone calls back into Python for every row). At 100,000 runs on SQLite the query reads
the whole table (about 0.2 s); an index on (owner, created_at, status, cost, duration_ms)
holds every column it needs and brings it to about 0.08 s. (Grouping by token too, that index
no longer holds every column: adding token_id to it would make it cover the query again.)

Reading every run on every view grows with the history (about 2.2 s at a million runs on
PostgreSQL), so past months are kept: once a month has been over for SAM3WEB_USAGE_SETTLE_DAYS
its figures (per owner and token) are added up once, over its created_at range, and stored in
a UsageMonth row; later views read those rows and add up only the runs since the first month
not settled. Triggers on the runs table (migration 0008) mark a kept month out of date
whenever one of its runs is added, deleted or changed in what the figures count, by any path
(a late cost, a deleted account's runs, a bulk update), so a kept month is never wrong.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import (
    Case,
    Count,
    F,
    Func,
    IntegerField,
    JSONField,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.utils import timezone

from segmentation.models import Run, UsageMonth

MONTHS = 12
NOT_BILLED = sorted(Run.NOT_BILLED)  # as Run.cost_shown has it


@dataclass
class Totals:
    """One row of figures: a teammate's, a month's, or everyone's."""

    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    known: Decimal = Decimal(0)  # Runflow's figures
    estimated_runs: int = 0  # billed runs whose figure has not arrived
    runflow_ms: int = 0
    batch_runs: int = 0  # of the runs, those made by batches

    @property
    def estimated(self) -> Decimal:
        return settings.SAM3WEB_PRICE_PER_IMAGE * self.estimated_runs

    @property
    def cost(self) -> Decimal:
        return self.known + self.estimated

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            runs=self.runs + other.runs,
            succeeded=self.succeeded + other.succeeded,
            failed=self.failed + other.failed,
            known=self.known + other.known,
            estimated_runs=self.estimated_runs + other.estimated_runs,
            runflow_ms=self.runflow_ms + other.runflow_ms,
            batch_runs=self.batch_runs + other.batch_runs,
        )


AGGREGATES: dict[str, Any] = {
    # COUNT(status) rather than COUNT(id): status is never NULL, and these five columns are
    # all an index needs to hold to answer without reading the (wide) rows.
    "runs": Count("status"),
    "succeeded": Count("status", filter=Q(status=Run.Status.SUCCEEDED)),
    "failed": Count("status", filter=Q(status=Run.Status.FAILED)),
    # A known cost counts whatever the status: Runflow's figure is authoritative (it is 0
    # for the runs it does not bill).
    "known": Sum("cost"),
    "estimated_runs": Count("status", filter=Q(cost__isnull=True) & ~Q(status__in=NOT_BILLED)),
    "runflow_ms": Sum("duration_ms"),
    "batch_runs": Count("status", filter=Q(batch__isnull=False)),
}


def _totals(row: Mapping[str, Any]) -> Totals:
    return Totals(
        runs=row["runs"] or 0,
        succeeded=row["succeeded"] or 0,
        failed=row["failed"] or 0,
        # Summed as a float by SQLite: back to the column's 6 places.
        known=Decimal(row["known"] or 0).quantize(Decimal("0.000001")),
        estimated_runs=row["estimated_runs"] or 0,
        runflow_ms=row["runflow_ms"] or 0,
        batch_runs=row["batch_runs"] or 0,
    )


def month_starts(now: dt.datetime, count: int = MONTHS) -> list[dt.datetime]:
    """The first instants of the last `count` months and of the next one (count + 1 aware
    datetimes, local midnight on the 1st), oldest first; the current month is the last."""
    zone = timezone.get_current_timezone()
    local = timezone.localtime(now, zone)
    year, month = local.year, local.month
    firsts = []
    for back in range(count - 1, -2, -1):
        y, m = divmod(year * 12 + month - 1 - back, 12)
        firsts.append(dt.datetime(y, m + 1, 1, tzinfo=zone))
    return firsts


@dataclass
class Usage:
    months: list[Totals]  # the last MONTHS months, oldest first
    year: dict[int | None, Totals]  # per owner (user id; None: deleted accounts), those months
    all_time: dict[int | None, Totals]  # per owner, every run
    # Per API token (token id; None: runs made in the browser), those months and every run.
    year_tokens: dict[int | None, Totals] = field(default_factory=dict)
    all_time_tokens: dict[int | None, Totals] = field(default_factory=dict)


def _next_month(first: dt.datetime) -> dt.datetime:
    """The first instant of the month after the one `first` starts (in first's zone)."""
    y, m = divmod(first.year * 12 + first.month, 12)
    return dt.datetime(y, m + 1, 1, tzinfo=first.tzinfo)


def _month_of(instant: dt.datetime) -> dt.datetime:
    return month_starts(instant, 1)[0]


def first_unsettled(now: dt.datetime) -> dt.datetime:
    """The first instant of the oldest month whose figures may still change: a month is
    settled, and kept, once SAM3WEB_USAGE_SETTLE_DAYS have passed since it ended (Runflow's
    last costs arrive just after)."""
    settle = dt.timedelta(days=settings.SAM3WEB_USAGE_SETTLE_DAYS)
    first = _month_of(now)
    while first + settle > now:  # the month before `first` ended too recently
        first = _month_of(first - dt.timedelta(days=1))
    return first


def _to_row(owner: int | None, token: int | None, t: Totals) -> dict[str, Any]:
    return {
        "owner": owner,
        "token": token,
        "runs": t.runs,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "known": str(t.known),
        "estimated_runs": t.estimated_runs,
        "runflow_ms": t.runflow_ms,
        "batch_runs": t.batch_runs,
    }


def _from_row(row: Mapping[str, Any]) -> Totals:
    return Totals(
        runs=row["runs"],
        succeeded=row["succeeded"],
        failed=row["failed"],
        known=Decimal(row["known"]),
        estimated_runs=row["estimated_runs"],
        runflow_ms=row["runflow_ms"],
        batch_runs=row["batch_runs"],
    )


# A month key for the runs created at or after starts[-1] (the next month: a clock ahead).
AFTER = dt.datetime.max.replace(tzinfo=dt.UTC)

Figures = list[tuple[dt.datetime, int | None, int | None, Totals]]


def usage_totals(starts: list[dt.datetime]) -> Usage:
    """Every figure of the page, `starts` as month_starts gives them: grouped by owner, by API
    token and by month (the last len(starts) - 1 months; earlier ones count in all time).

    Settled months (see first_unsettled) are read from their UsageMonth rows; the database adds
    up the rest: the recent months, and any settled month not kept yet (or out of date, see
    UsageMonth), in one query over created_at ranges that the index on created_at serves, and
    keeps the settled ones it added up for the next view. A settled history costs one small
    read whatever its size; the runs read are only those of the last month or two."""
    now = timezone.now()
    unsettled = first_unsettled(now)
    figures: Figures = []
    # Months kept, in this time zone (another zone's months are other rows).
    kept: dict[dt.datetime, UsageMonth] = {}
    first: dt.datetime | None = None
    live = _aggregate([(unsettled, None)], with_first=True)
    if live is not None:
        figures, first = live
    else:  # no run in the recent months: when was the first one?
        first = Run.objects.order_by("created_at").values_list("created_at", flat=True).first()
    settled: list[dt.datetime] = []
    if first is not None and first < unsettled:
        month = _month_of(first)
        while month < unsettled:
            settled.append(month)
            month = _next_month(month)
        for snapshot in UsageMonth.objects.filter(month__gte=settled[0], month__lt=unsettled):
            local = timezone.localtime(snapshot.month)
            if _month_of(local) == local and snapshot.ends == _next_month(local):
                kept[snapshot.month] = snapshot
    missing = [m for m in settled if m not in kept or kept[m].rows is None]
    if missing:
        figures += _compute_and_keep(missing, kept, now)
    for month in settled:
        rows = kept[month].rows if month in kept and month not in missing else None
        if rows is not None:
            figures += [(month, r["owner"], r["token"], _from_row(r)) for r in rows]
    return _usage(figures, starts)


def _compute_and_keep(
    missing: list[dt.datetime], kept: dict[dt.datetime, UsageMonth], now: dt.datetime
) -> Figures:
    """Add up settled months not kept (or out of date) and keep them. A row is claimed (rows
    NULL) before the runs are read: a run changed meanwhile moves its generation on, and then
    the figures read are not kept (the next view adds that month up again)."""
    new = [m for m in missing if m not in kept]
    UsageMonth.objects.bulk_create(
        [UsageMonth(month=m, ends=_next_month(m)) for m in new],
        ignore_conflicts=True,  # another view claimed it first: fine
    )
    generations = {m: kept[m].generation if m in kept else 0 for m in missing}
    # A transaction that changed a run of a new row's month before the row existed moved no
    # generation on; if it is still open, the runs read below miss its change. PostgreSQL
    # says whether any transaction that began before the rows were made is still running
    # (SQLite runs one writer at a time: none can be). If one is, the new months are added up
    # but not kept; the next view keeps them.
    horizon = _snapshot("xmax") if new and connection.vendor == "postgresql" else None
    if horizon is not None and _snapshot("xmin") < horizon:
        generations = {m: g for m, g in generations.items() if m in kept}
    # Contiguous months in one range each.
    ranges: list[tuple[dt.datetime, dt.datetime | None]] = []
    for month in missing:
        end = _next_month(month)
        if ranges and ranges[-1][1] == month:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((month, end))
    found = _aggregate(ranges, with_first=False)
    figures = found[0] if found is not None else []
    per_month: dict[dt.datetime, list[dict[str, Any]]] = {m: [] for m in missing}
    for month, owner, token, totals in figures:
        per_month[month].append(_to_row(owner, token, totals))
    # One statement for every month, each kept only if its generation did not move.
    claimed = Q()
    for month, generation in generations.items():
        claimed |= Q(month=month, ends=_next_month(month), generation=generation)
    if not generations:
        return figures
    UsageMonth.objects.filter(claimed).update(
        rows=Case(
            *[
                When(month=month, then=Value(rows, output_field=JSONField()))
                for month, rows in per_month.items()
            ],
            output_field=JSONField(),
        ),
        computed_at=now,
    )
    return figures


def _snapshot(bound: str) -> int:
    """PostgreSQL: the xmin (oldest transaction still running) or the xmax (first transaction
    not yet begun) of a snapshot taken now."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_snapshot_{bound}(pg_current_snapshot())::text::bigint")
        return int(cursor.fetchone()[0])


def _plus(column: str) -> Func:
    return Func(F(column), template="+%(expressions)s", output_field=IntegerField())


def _aggregate(
    ranges: list[tuple[dt.datetime, dt.datetime | None]], *, with_first: bool
) -> tuple[Figures, dt.datetime | None] | None:
    """The runs created in `ranges` ([start, end), end None: no end), added up by the database
    grouped by owner, API token and month. With with_first, the first run's created_at comes
    along (a subquery the database answers once from the index): one round trip less. None
    when no run is in the ranges."""
    lowest = ranges[0][0]
    highest = max((end for _, end in ranges if end is not None), default=None)
    if any(end is None for _, end in ranges):
        highest = None
    # Month boundaries over the ranges; the month of a row is the last boundary at or before
    # it (bucketed by plain comparisons in SQL: see the module's docstring).
    bounds = [lowest]
    while highest is None or bounds[-1] < highest:
        following = _next_month(bounds[-1])
        if highest is None and following > timezone.now():
            bounds.append(following)
            break
        bounds.append(following)
    bucket = Case(
        *[When(created_at__lt=bound, then=Value(i - 1)) for i, bound in enumerate(bounds)],
        default=Value(len(bounds) - 1),
        output_field=IntegerField(),
    )
    where = Q()
    for start, end in ranges:
        where |= Q(created_at__gte=start) & (Q() if end is None else Q(created_at__lt=end))
    # Grouped by +owner_id, not owner_id: a unary plus changes no value, but grouped by the
    # bare column SQLite walks the whole owner index (for its order) instead of reading only
    # the created_at range asked for.
    rows = (
        Run.objects.order_by()
        .filter(where)
        .annotate(month=bucket, by_owner=_plus("owner"), by_token=_plus("token"))
    )
    fields = ["month", "by_owner", "by_token"]
    if with_first:
        oldest = Run.objects.order_by("created_at").values("created_at")[:1]
        rows = rows.annotate(first=Subquery(oldest))
        fields.append("first")
    figures: Figures = []
    first = None
    for row in rows.values(*fields).annotate(**AGGREGATES):
        i = row["month"]
        month = bounds[i] if i < len(bounds) - 1 else AFTER
        figures.append((month, row["by_owner"], row["by_token"], _totals(row)))
        first = row.get("first")
    if not figures:
        return None
    return figures, first


def _usage(figures: Figures, starts: list[dt.datetime]) -> Usage:
    after = len(starts) - 1
    index = {start: i for i, start in enumerate(starts[:-1])}
    usage = Usage(months=[Totals() for _ in range(after)], year={}, all_time={})
    for month, owner, token, totals in figures:
        usage.all_time[owner] = usage.all_time.get(owner, Totals()) + totals
        usage.all_time_tokens[token] = usage.all_time_tokens.get(token, Totals()) + totals
        i = index.get(month)
        if i is not None:
            usage.months[i] += totals
            usage.year[owner] = usage.year.get(owner, Totals()) + totals
            usage.year_tokens[token] = usage.year_tokens.get(token, Totals()) + totals
    return usage


def money(amount: Decimal) -> str:
    """$1,234.50; below a dollar to the hundredth of a cent, as run pages show costs ($0.005,
    $0.0042), since a run costs half a cent."""
    if amount >= 1:
        return f"${amount:,.2f}"
    text = f"{amount.quantize(Decimal('0.0001')):f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def duration(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:,} h {minutes} min"
