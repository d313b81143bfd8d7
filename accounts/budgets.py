"""Budgets and the API's rate limit: what a teammate (and the team) may still spend this month,
and the check every new run passes, whichever way it is made (the run form, reuse, the API).

Spending is charged when a run is accepted, never after: ``reserve`` runs inside the
transaction that stores the run, holding a lock (the teammate's Profile row, and the Team row
when the team has a budget), so requests racing for the last dollar are served one at a time
and the budget cannot be overshot however many arrive at once. On SQLite every write
transaction is taken IMMEDIATE (settings), which serialises them just the same.

What a run counts is ``segmentation.models.charge()``: the list price while it is under way,
Runflow's cost once that arrives, nothing when it failed. Deleted runs keep counting
(``RemovedCharge``). Months are the usage page's (local midnight on the 1st)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet, Sum
from django.utils import timezone

from accounts.models import Profile, Team
from segmentation.models import RemovedCharge, Run, charge
from segmentation.usage import money, month_starts

RATE_WINDOW = dt.timedelta(minutes=1)


class BudgetExceeded(Exception):
    """The run would take a budget past its limit. The message says whose, and what is left."""


class RateLimited(Exception):
    """Too many API runs in the last minute; ``retry_after`` seconds until the next one may go."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        limit = settings.SAM3WEB_API_RATE_PER_MINUTE
        super().__init__(
            f"At most {limit} runs a minute may be created through the API; "
            f"try again in {retry_after} s."
        )


def month_start(now: dt.datetime | None = None) -> dt.datetime:
    return month_starts(now or timezone.now(), 1)[0]


def _since(since: dt.datetime | None) -> tuple[QuerySet[Run], QuerySet[RemovedCharge]]:
    """The runs made since ``since`` (this month by default), and the deleted ones' charges."""
    since = since or month_start()
    return (
        Run.objects.filter(created_at__gte=since).order_by(),
        RemovedCharge.objects.filter(run_created_at__gte=since).order_by(),
    )


def _dollars(total: Any) -> Decimal:
    # SQLite sums decimals as floats: back to the cost column's places.
    return Decimal(total or 0).quantize(Decimal("0.000001"))


def spent(owner: Any = None, *, since: dt.datetime | None = None) -> Decimal:
    """What runs made since ``since`` (this month by default) count against budgets: the
    teammate's runs when ``owner`` is given, else everyone's."""
    runs, removed = _since(since)
    if owner is not None:
        runs, removed = runs.filter(owner=owner), removed.filter(owner=owner)
    total = runs.aggregate(total=Sum(charge()))["total"] or 0
    total += removed.aggregate(total=Sum("amount"))["total"] or 0
    return _dollars(total)


def spent_by_owner(since: dt.datetime | None = None) -> dict[int | None, Decimal]:
    """``spent(user)`` for every teammate at once (user id to dollars; None: deleted
    accounts), grouped by the database in two queries rather than two per teammate."""
    runs, removed = _since(since)
    totals: dict[int | None, Decimal] = {}
    for owner, total in [
        *runs.values("owner").annotate(total=Sum(charge())).values_list("owner", "total"),
        *removed.values("owner").annotate(total=Sum("amount")).values_list("owner", "total"),
    ]:
        totals[owner] = totals.get(owner, Decimal(0)) + Decimal(total or 0)
    return {owner: _dollars(total) for owner, total in totals.items()}


@dataclass(frozen=True)
class Standing:
    """A teammate's budget this month, and the team's, as pages show them."""

    budget: Decimal | None  # None: no limit
    spent: Decimal
    team_budget: Decimal | None
    team_spent: Decimal | None  # only worked out when the team has a budget

    @property
    def left(self) -> Decimal | None:
        """What may still be spent this month, the tighter of the two budgets; None: no limit."""
        lefts = []
        if self.budget is not None:
            lefts.append(self.budget - self.spent)
        if self.team_budget is not None and self.team_spent is not None:
            lefts.append(self.team_budget - self.team_spent)
        return max(Decimal(0), min(lefts)) if lefts else None

    @property
    def runs_left(self) -> int | None:
        left = self.left
        if left is None:
            return None
        return math.floor(left / settings.SAM3WEB_PRICE_PER_IMAGE)

    @property
    def limited(self) -> bool:
        return self.left is not None

    @property
    def text(self) -> str:
        """One sentence for the pages that start runs ("" when nothing limits them)."""
        left = self.left
        if left is None:
            return ""
        runs = self.runs_left or 0
        plural = "" if runs == 1 else "s"
        if self.budget is not None and (
            self.team_budget is None
            or self.team_spent is None
            or self.budget - self.spent <= self.team_budget - self.team_spent
        ):
            return (
                f"{money(left)} of your {money(self.budget)} monthly budget left "
                f"(about {runs:,} run{plural})."
            )
        assert self.team_budget is not None
        return (
            f"{money(left)} of the team's {money(self.team_budget)} monthly budget left "
            f"(about {runs:,} run{plural})."
        )


def budget_of(owner: Any) -> Decimal | None:
    """A teammate's own monthly budget; None: no limit."""
    if owner is None or owner.pk is None:
        return None
    budget: Decimal | None = (
        Profile.objects.filter(user=owner).values_list("monthly_budget", flat=True).first()
    )
    return budget


def standing(owner: Any) -> Standing:
    team_budget = settings.SAM3WEB_TEAM_MONTHLY_BUDGET
    return Standing(
        budget=budget_of(owner),
        spent=spent(owner) if owner is not None and owner.pk is not None else Decimal(0),
        team_budget=team_budget,
        team_spent=spent() if team_budget is not None else None,
    )


def refusal(owner: Any, runs: int = 1) -> str:
    """Why ``runs`` more runs would overshoot a budget ("" when they fit). Not a promise: only
    ``reserve`` under its lock is. Adds up spending only for the budgets there are: a team
    without budgets pays one indexed read per run."""
    return _refusal(owner, budget_of(owner), runs)


def _refusal(owner: Any, budget: Decimal | None, runs: int = 1) -> str:
    price = settings.SAM3WEB_PRICE_PER_IMAGE * runs
    if budget is not None:
        mine = spent(owner)
        if mine + price > budget:
            return (
                f"Your monthly budget of {money(budget)} is spent ({money(mine)} so far this "
                f"month; a run costs {money(settings.SAM3WEB_PRICE_PER_IMAGE)}). "
                "An admin can raise it on the Team page."
            )
    team_budget = settings.SAM3WEB_TEAM_MONTHLY_BUDGET
    if team_budget is not None:
        team = spent()
        if team + price > team_budget:
            return (
                f"The team's monthly budget of {money(team_budget)} is spent "
                f"({money(team)} so far this month)."
            )
    return ""


def rate_wait(owner: Any, now: dt.datetime | None = None) -> int:
    """Seconds until ``owner`` may create another run through the API (0: now)."""
    limit = settings.SAM3WEB_API_RATE_PER_MINUTE
    now = now or timezone.now()
    recent = (
        Run.objects.filter(owner=owner, token__isnull=False, created_at__gt=now - RATE_WINDOW)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    times = list(recent)
    if len(times) < limit:
        return 0
    frees_at = times[-1] + RATE_WINDOW
    return max(1, math.ceil((frees_at - now).total_seconds()))


def reserve(owner: Any, *, via_api: bool = False) -> None:
    """Check, under the budget locks, that one more run fits; raise BudgetExceeded or
    RateLimited when it does not. Must run inside the transaction that then stores the run:
    the locks are held until it commits, so the next request's check sees this run."""
    assert transaction.get_connection().in_atomic_block, "reserve() outside a transaction"
    if settings.SAM3WEB_TEAM_MONTHLY_BUDGET is not None:
        # Always the team's row first, then the teammate's: one order, no deadlocks.
        Team.objects.select_for_update().filter(pk=Team.SINGLETON).first()
    budget = None
    if owner is not None and owner.pk is not None:
        budget = (
            Profile.objects.select_for_update()
            .filter(user=owner)
            .values_list("monthly_budget", flat=True)
            .first()
        )
        if via_api:
            wait = rate_wait(owner)
            if wait:
                raise RateLimited(wait)
    reason = _refusal(owner, budget)
    if reason:
        raise BudgetExceeded(reason)


def prepare(owner: Any, *, via_api: bool = False) -> None:
    """Make the rows ``reserve`` locks, before its transaction: two transactions making the
    same row at once would have one of them fail. A teammate with a budget has their row
    already (the budget is on it); an API run always needs it, for the rate limit."""
    if via_api and owner is not None and owner.pk is not None:
        Profile.of(owner)
    if settings.SAM3WEB_TEAM_MONTHLY_BUDGET is not None:
        Team.objects.get_or_create(pk=Team.SINGLETON)
