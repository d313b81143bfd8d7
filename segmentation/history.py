"""The history page's query: filters (a form that owns their validation) and keyset paging.

Keyset, not OFFSET: a page is "the next 24 runs after this one in the chosen order", found by
walking an index from the cursor, so page 4,000 costs what page 1 costs. Nothing counts the
whole table either: the page says how many runs match up to COUNT_CAP, then "more than".
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import CharField, F, Func, Q, QuerySet
from django.db.models.lookups import Contains
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone

from segmentation.models import Batch, BatchRun, Run

PER_PAGE = 24
COUNT_CAP = 1000
SEARCH_MAX = 200


@dataclass(frozen=True)
class Sort:
    label: str
    field: str
    descending: bool
    # Whether the field can be NULL (NULLs come last whatever the direction).
    nullable: bool = False


SORTS = {
    "new": Sort("Newest first", "created_at", True),
    "old": Sort("Oldest first", "created_at", False),
    "slow": Sort("Slowest first", "duration_ms", True, nullable=True),
    "fast": Sort("Fastest first", "duration_ms", False, nullable=True),
    "masks": Sort("Most masks first", "mask_count", True),
}

KINDS = [("text", "Text prompt"), ("points", "Points"), ("boxes", "Boxes")]


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class AsciiUpper(Func):
    """A text column with its ASCII letters in capitals and every other character as it is:
    the one case-insensitivity SQLite and PostgreSQL share whatever their locale. SQLite's LIKE
    ignores the case of ASCII letters only, so there the column is compared as it is (and the
    history's covering indexes still answer); PostgreSQL's upper() under the "C" collation
    changes ASCII letters only, where its default collation would follow the server's locale
    (Unicode letters on one server, ASCII on another)."""

    output_field = CharField()

    def as_sql(  # type: ignore[override]
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, tuple[Any, ...]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return sql, tuple(params)

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, tuple[Any, ...]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f'UPPER(({sql}) COLLATE "C")', tuple(params)


def prompt_search(text: str) -> Q:
    """Runs whose prompt contains `text`, ASCII letters in either case (see AsciiUpper): "CAT"
    finds "Black cat"; "É" finds "É" only, on either database."""
    return Q(Contains(AsciiUpper(F("prompt_text")), text.translate(_ASCII_UPPER)))


class HistoryFilter(forms.Form):
    q = forms.CharField(
        label="Search prompts",
        required=False,
        max_length=SEARCH_MAX,
        strip=True,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "e.g. cat, wheel"}),
    )
    status = forms.MultipleChoiceField(
        label="Status",
        required=False,
        choices=Run.Status.choices,
        widget=forms.CheckboxSelectMultiple,
    )
    owner = forms.ModelChoiceField(
        label="Teammate",
        required=False,
        queryset=get_user_model().objects.order_by("username"),
        to_field_name="username",
        empty_label="Everyone",
        error_messages={"invalid_choice": "There is no teammate with that name."},
    )
    mine = forms.BooleanField(label="Only my runs", required=False)
    kind = forms.ChoiceField(label="Prompt type", required=False, choices=[("", "Any")] + KINDS)
    since = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    sort = forms.ChoiceField(
        label="Sort",
        required=False,
        choices=[(key, s.label) for key, s in SORTS.items()],
    )
    # The runs of one batch (made by it, or reused by it): set by the batch page's link, shown
    # as a chip rather than a field.
    batch = forms.ModelChoiceField(
        label="Batch",
        required=False,
        queryset=Batch.objects.all(),
        widget=forms.HiddenInput,
        error_messages={
            "invalid_choice": "There is no batch with that number (it may have been deleted): "
            "showing the runs of every batch."
        },
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and until < since:
            self.add_error("until", "The end date is before the start date.")
        return data

    def filters(self, user: Any) -> Q:
        """Every filter that passed validation (a bad one is shown beside its field and left
        out, rather than hiding every run)."""
        data = getattr(self, "cleaned_data", {})
        q = Q()
        if text := data.get("q"):
            q &= prompt_search(text)
        if batch := data.get("batch"):
            # A subquery, not a join: a run is listed once however many cells point at it.
            q &= Q(pk__in=BatchRun.objects.filter(batch=batch).values("run_id"))
        if statuses := data.get("status"):
            q &= Q(status__in=statuses)
        if data.get("mine"):
            q &= Q(owner=user)
        elif owner := data.get("owner"):
            q &= Q(owner=owner)
        kind = data.get("kind")
        if kind == "text":
            q &= ~Q(prompt_text="")
        elif kind == "points":
            q &= Q(point_count__gt=0)
        elif kind == "boxes":
            q &= Q(box_count__gt=0)
        tz = timezone.get_current_timezone()
        if since := data.get("since"):
            q &= Q(created_at__gte=dt.datetime.combine(since, dt.time.min, tzinfo=tz))
        if until := data.get("until"):
            q &= Q(
                created_at__lt=dt.datetime.combine(until, dt.time.min, tzinfo=tz)
                + dt.timedelta(days=1)
            )
        return q

    @property
    def sort_key(self) -> str:
        key = getattr(self, "cleaned_data", {}).get("sort")
        return key if key in SORTS else "new"

    def active(self) -> bool:
        data = getattr(self, "cleaned_data", {})
        return any(
            data.get(name)
            for name in ("q", "status", "owner", "mine", "kind", "since", "until", "batch")
        )


# --- keyset cursors ------------------------------------------------------------------------------


class BadCursor(ValueError):
    pass


def encode_cursor(run: Run, sort: Sort) -> str:
    value = getattr(run, sort.field)
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    elif isinstance(value, Decimal):
        value = str(value)
    raw = json.dumps([value, str(run.pk)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, sort: Sort) -> tuple[Any, uuid.UUID]:
    """The (sort value, id) a cursor names; BadCursor for anything we did not make."""
    if len(token) > 200:
        raise BadCursor("too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value, run_id = json.loads(raw)
        run_id = uuid.UUID(str(run_id))
        if value is None:
            if not sort.nullable:
                raise BadCursor("no value")
        elif sort.field == "created_at":
            value = dt.datetime.fromisoformat(value)
            if value.tzinfo is None:
                raise BadCursor("naive time")
        elif not isinstance(value, int) or isinstance(value, bool):
            raise BadCursor("not a number")
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadCursor(str(exc)) from None
    return value, run_id


def _beyond(sort: Sort, value: Any, run_id: uuid.UUID, forward: bool) -> list[Q]:
    """Rows strictly after (value, id) in the sort's order (or before it, going back), as
    disjoint parts that follow one another in that order. NULL sort values come after every
    other value, in id order among themselves. Parts, not one OR: each part is a range the
    database can seek to in the sort's index, where an OR of the two would make it scan."""
    later = sort.descending == forward  # "after" means smaller values in a descending sort
    cmp = "lt" if later else "gt"
    f = sort.field
    if value is None:
        # Inside the NULL tail: only the id moves on; going back leaves the tail for values.
        tail = Q(**{f"{f}__isnull": True, f"id__{cmp}": run_id})
        return [tail] if forward else [tail, Q(**{f"{f}__isnull": False})]
    # The first condition says nothing new, but it is a range the database can start the
    # index scan from; without it SQLite walks the index from the top to the cursor.
    q = Q(**{f"{f}__{cmp}e": value}) & (
        Q(**{f"{f}__{cmp}": value}) | Q(**{f: value, f"id__{cmp}": run_id})
    )
    if sort.nullable and forward:
        return [q, Q(**{f"{f}__isnull": True})]
    return [q]


def _ordering(sort: Sort, forward: bool) -> list[Any]:
    """The sort's order, then the id's (the unique key: rows with equal values keep one order
    on every database). No NULLS FIRST/LAST: every part page_of reads is all NULLs or none
    (see _beyond), and a NULLS clause the index was not built with makes PostgreSQL sort the
    whole table (a B-tree read backwards puts NULLs first; SQLite puts them last)."""
    desc = sort.descending == forward
    field = F(sort.field)
    return [field.desc() if desc else field.asc(), F("id").desc() if desc else F("id").asc()]


@dataclass
class Page:
    runs: list[Run]
    next_cursor: str | None
    prev_cursor: str | None
    count: int
    count_capped: bool


def page_of(queryset: QuerySet[Run], sort: Sort, *, after: str = "", before: str = "") -> Page:
    """One page of `queryset` in `sort` order: the first, the one after cursor `after`, or the
    one before cursor `before`. Raises BadCursor for a cursor that is not ours."""
    forward = not before
    # A nullable sort reads its values, then its NULLs: two ranges of its index.
    parts = [Q(**{f"{sort.field}__isnull": isnull}) for isnull in (False, True)]
    if not sort.nullable:
        parts = [Q()]
    if after or before:
        value, run_id = decode_cursor(after or before, sort)
        parts = _beyond(sort, value, run_id, forward)
    ordering = _ordering(sort, forward)
    rows: list[Run] = []
    for part in parts:  # the next part only when the one before ran out
        rows += queryset.filter(part).order_by(*ordering)[: PER_PAGE + 1 - len(rows)]
        if len(rows) > PER_PAGE:
            break
    more = len(rows) > PER_PAGE
    if not forward and not more:
        # Back at the start: show the whole first page, not a short remainder.
        return page_of(queryset, sort)
    rows = rows[:PER_PAGE]
    if not forward:
        rows.reverse()
    has_next = more if forward else True
    has_prev = bool(after) if forward else more
    count = queryset.order_by()[: COUNT_CAP + 1].count()
    return Page(
        runs=rows,
        next_cursor=encode_cursor(rows[-1], sort) if rows and has_next else None,
        prev_cursor=encode_cursor(rows[0], sort) if rows and has_prev else None,
        count=min(count, COUNT_CAP),
        count_capped=count > COUNT_CAP,
    )
