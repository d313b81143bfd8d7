"""What the team spends: totals per teammate and per month.

Cost is what the run pages show (Run.cost_shown), summed: Runflow's own figure where it has
arrived, plus the list price (settings.SAM3WEB_PRICE_PER_IMAGE) for each billed run whose
figure has not, counted separately so the page can say how much of a total is estimated.
Runflow does not bill failed, canceled or never-submitted runs.

Everything is added up by the database in one query (COUNT/SUM with FILTER, grouped by owner
and month), never by reading runs into Python: the page costs the same few queries whatever
the size of the history. Months are bucketed by comparing created_at with the month
boundaries (local midnight on the 1st, in settings.TIME_ZONE), computed here as aware
datetimes: exact in any time zone, and plain comparisons in SQL (SQLite's TruncMonth with a
time zone calls back into Python for every row). At 100,000 runs on SQLite the query reads
the whole table (about 0.2 s); an index on (owner, created_at, status, cost, duration_ms)
holds every column it needs and brings it to about 0.08 s.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Case, Count, IntegerField, Q, Sum, Value, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from .models import Run

MONTHS = 12
PERIODS = [("year", "Last 12 months"), ("all", "All time")]
NOT_BILLED = sorted(Run.NOT_BILLED)  # as Run.cost_shown has it


class UsageFilter(forms.Form):
    period = forms.ChoiceField(choices=PERIODS, required=False)

    def clean_period(self) -> str:
        return self.cleaned_data["period"] or "year"


@dataclass
class Totals:
    """One row of figures: a teammate's, a month's, or everyone's."""

    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    known: Decimal = Decimal(0)  # Runflow's figures
    estimated_runs: int = 0  # billed runs whose figure has not arrived
    runflow_ms: int = 0

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
}


def _totals(row: dict[str, Any]) -> Totals:
    return Totals(
        runs=row["runs"] or 0,
        succeeded=row["succeeded"] or 0,
        failed=row["failed"] or 0,
        # Summed as a float by SQLite: back to the column's 6 places.
        known=Decimal(row["known"] or 0).quantize(Decimal("0.000001")),
        estimated_runs=row["estimated_runs"] or 0,
        runflow_ms=row["runflow_ms"] or 0,
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


def usage_totals(starts: list[dt.datetime]) -> Usage:
    """Every figure of the page from one query: runs grouped by owner and by month bucket
    (-1 before starts[0], i for [starts[i], starts[i + 1]), len(starts) - 1 after), so the
    database reads the runs once whatever the size of the history."""
    after = len(starts) - 1
    bucket = Case(
        *[When(created_at__lt=start, then=Value(i - 1)) for i, start in enumerate(starts)],
        default=Value(after),
        output_field=IntegerField(),
    )
    rows = Run.objects.order_by().annotate(month=bucket).values("owner", "month")
    usage = Usage(months=[Totals() for _ in range(after)], year={}, all_time={})
    for row in rows.annotate(**AGGREGATES):
        totals, owner, month = _totals(row), row["owner"], row["month"]
        usage.all_time[owner] = usage.all_time.get(owner, Totals()) + totals
        if 0 <= month < after:
            usage.months[month] += totals
            usage.year[owner] = usage.year.get(owner, Totals()) + totals
    return usage


# --- presentation --------------------------------------------------------------------------


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


def _figures(t: Totals) -> dict[str, Any]:
    return {
        "runs": t.runs,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "cost": money(t.cost),
        "estimated": money(t.estimated) if t.estimated_runs else "",
        "estimated_runs": t.estimated_runs,
        "time": duration(t.runflow_ms),
    }


def _nice_ceiling(value: Decimal) -> Decimal:
    """The chart's top: 1, 2, 2.5 or 5 times a power of ten, at or above the largest bar."""
    if value <= 0:
        return Decimal("0.01")
    exponent = Decimal(10) ** (value.adjusted())
    for step in (1, 2, Decimal("2.5"), 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent  # pragma: no cover - the loop always returns


def chart(months: list[Totals], starts: list[dt.datetime]) -> dict[str, Any]:
    """Bar geometry for the server-drawn SVG (viewBox units): a bar per month, its estimated
    part drawn apart on top."""
    width, height = 900, 280
    # Room for the axis labels at the larger type phones get (usage.css).
    left, right, top, bottom = 108, 8, 16, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    ceiling = _nice_ceiling(max(m.cost for m in months))
    slot = plot_w / len(months)
    bars = []
    for i, (m, start) in enumerate(zip(months, starts, strict=False)):
        total_h = float(m.cost / ceiling) * plot_h
        est_h = float(m.estimated / ceiling) * plot_h
        x = left + i * slot + slot * 0.18
        bars.append(
            {
                "x": round(x, 1),
                "w": round(slot * 0.64, 1),
                # Runflow's figure at the bottom, the estimated part stacked on it.
                "y": round(top + plot_h - total_h + est_h, 1),
                "h": round(total_h - est_h, 1),
                "est_y": round(top + plot_h - total_h, 1),
                "est_h": round(est_h, 1),
                "label_x": round(left + i * slot + slot / 2, 1),
                "month": f"{start:%b}",
                # The heading names the range; January says where the year turns.
                "year": f"{start:%Y}" if start.month == 1 else "",
                "title": f"{start:%B %Y}: {money(m.cost)}, {m.runs:,} runs"
                + (f" ({money(m.estimated)} estimated)" if m.estimated_runs else ""),
            }
        )
    # Lines at quarters, labelled at halves: short labels that fit beside a phone-size chart.
    grid = [
        {
            "y": round(top + plot_h - plot_h * k / 4, 1),
            "label": money(ceiling * k / 4) if k % 2 == 0 else "",
        }
        for k in range(5)
    ]
    peak_i = max(range(len(months)), key=lambda i: (months[i].cost, i))
    total = sum((m.cost for m in months), Decimal(0))
    summary = (
        f"Bar chart of the cost per month from {starts[0]:%B %Y} to {starts[-2]:%B %Y}: "
        f"{money(total)} in all"
    )
    if months[peak_i].cost > 0:
        summary += f", the most in {starts[peak_i]:%B %Y} ({money(months[peak_i].cost)})"
    summary += ". The same figures are in the table below."
    return {
        "width": width,
        "height": height,
        "left": left,
        "axis_x": left - 8,
        "right": width - right,
        "base": top + plot_h,
        "month_y": top + plot_h + 26,
        "year_y": top + plot_h + 56,
        "bars": bars,
        "grid": grid,
        "summary": summary,
    }


@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    form = UsageFilter(request.GET)
    valid = form.is_valid()
    period = form.cleaned_data["period"] if valid else "year"
    starts = month_starts(timezone.now())
    since = starts[0]

    found = usage_totals(starts)
    months = found.months
    year = sum(months, Totals())
    everything = sum(found.all_time.values(), Totals())
    chosen = found.year if period == "year" else found.all_time
    # Grouped by owner id, not by the joined username: the aggregates then need the runs
    # table alone; the few names come in one small query.
    names = dict(
        get_user_model()
        .objects.filter(pk__in=[pk for pk in chosen if pk is not None])
        .values_list("pk", "username")
    )
    teammates = sorted(
        ((names.get(pk), t) for pk, t in chosen.items()),
        key=lambda item: (-item[1].cost, -item[1].runs, item[0] or "~"),
    )

    history = reverse("run_list")
    rows = []
    for username, t in teammates:
        query: dict[str, str] = {}
        if username is not None:
            query["owner"] = username
            if period == "year":
                query["since"] = timezone.localtime(since).date().isoformat()
        rows.append(
            {
                "username": username,
                "url": f"{history}?{urlencode(query)}" if username is not None else "",
                **_figures(t),
            }
        )
    context = {
        "form": form,
        "period": period,
        "periods": [
            {"value": value, "label": label, "current": value == period} for value, label in PERIODS
        ],
        "period_label": dict(PERIODS)[period],
        "range_label": f"{starts[0]:%B %Y} – {starts[-2]:%B %Y}",
        "price": money(settings.SAM3WEB_PRICE_PER_IMAGE),
        "year": _figures(year),
        "all_time": _figures(everything),
        "teammates": rows,
        "months": [
            {"label": f"{start:%B %Y}", **_figures(m)}
            for start, m in zip(starts, months, strict=False)
        ],
        "chart": chart(months, starts),
        "empty": everything.runs == 0,
    }
    return render(request, "segmentation/usage.html", context, status=200 if valid else 400)
