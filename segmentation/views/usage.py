"""The usage page: what the team spends, per teammate, per API token and per month, with a
chart (the figures are ``segmentation.usage``'s)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.models import ApiToken
from segmentation.usage import Totals, duration, money, month_starts, usage_totals

PERIODS = [("year", "Last 12 months"), ("all", "All time")]


class UsageFilter(forms.Form):
    period = forms.ChoiceField(choices=PERIODS, required=False)

    def clean_period(self) -> str:
        return self.cleaned_data["period"] or "year"


def _figures(t: Totals) -> dict[str, Any]:
    return {
        "runs": t.runs,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "cost": money(t.cost),
        "estimated": money(t.estimated) if t.estimated_runs else "",
        "estimated_runs": t.estimated_runs,
        "batch_runs": t.batch_runs,
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
        ((names.get(pk) if pk is not None else None, t) for pk, t in chosen.items()),
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
        "tokens": _token_rows(found.year_tokens if period == "year" else found.all_time_tokens),
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


def _token_rows(chosen: dict[int | None, Totals]) -> list[dict[str, Any]]:
    """The "By API token" table: each token that made runs in the period, most spent first,
    then the runs made in the browser. Empty when no run of the period came through the API
    (then the table would say nothing). The names come in one small query, as the
    teammates' do, and only when there are tokens to name."""
    ids = [pk for pk in chosen if pk is not None]
    if not ids:
        return []
    named = {
        pk: (name, username, revoked_at)
        for pk, name, username, revoked_at in ApiToken.objects.filter(pk__in=ids).values_list(
            "pk", "name", "user__username", "revoked_at"
        )
    }
    rows = []
    for pk in sorted(ids, key=lambda pk: (-chosen[pk].cost, -chosen[pk].runs, named[pk][0])):
        name, username, revoked_at = named[pk]
        rows.append(
            {"name": name, "owner": username, "revoked": revoked_at is not None, "api": True}
            | _figures(chosen[pk])
        )
    if None in chosen:
        rows.append(
            {"name": "", "owner": "", "revoked": False, "api": False} | _figures(chosen[None])
        )
    return rows
