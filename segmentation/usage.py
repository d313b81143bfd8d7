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
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Case, Count, IntegerField, Q, Sum, Value, When
from django.utils import timezone

from segmentation.models import Run

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


def usage_totals(starts: list[dt.datetime]) -> Usage:
    """Every figure of the page from one query: runs grouped by owner, by API token and by
    month bucket (-1 before starts[0], i for [starts[i], starts[i + 1]), len(starts) - 1
    after), so the database reads the runs once whatever the size of the history."""
    after = len(starts) - 1
    bucket = Case(
        *[When(created_at__lt=start, then=Value(i - 1)) for i, start in enumerate(starts)],
        default=Value(after),
        output_field=IntegerField(),
    )
    rows = Run.objects.order_by().annotate(month=bucket).values("owner", "token", "month")
    usage = Usage(months=[Totals() for _ in range(after)], year={}, all_time={})
    for row in rows.annotate(**AGGREGATES):
        totals, owner, token, month = _totals(row), row["owner"], row["token"], row["month"]
        usage.all_time[owner] = usage.all_time.get(owner, Totals()) + totals
        usage.all_time_tokens[token] = usage.all_time_tokens.get(token, Totals()) + totals
        if 0 <= month < after:
            usage.months[month] += totals
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
