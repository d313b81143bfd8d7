"""Runflow's verdict on a run, whoever brings it: a callback, a poll, later a local engine.

`parse_callback` and `parse_run_object` turn the two shapes Runflow sends into one
`ProviderResult` (refusing wrong types with a reason); `apply_result` records it on the run
exactly once. Terminal states are final: the first terminal result wins, whatever arrives
after it is recorded by the caller and ignored here."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .models import Run

STATUSES = {
    "queued": Run.Status.QUEUED,
    "dispatching": Run.Status.DISPATCHING,
    "running": Run.Status.RUNNING,
    "succeeded": Run.Status.SUCCEEDED,
    # Runflow's docs: treat as success and look at what came out.
    "partial_succeeded": Run.Status.SUCCEEDED,
    "failed": Run.Status.FAILED,
    # Both spellings occur (callbacks say "cancelled", run objects "canceled").
    "canceled": Run.Status.CANCELED,
    "cancelled": Run.Status.CANCELED,
}
PROGRESS_ORDER = [Run.Status.QUEUED, Run.Status.DISPATCHING, Run.Status.RUNNING]
# A terminal result may land on a run in any of these. NOT_SUBMITTED is among them: a create
# we gave up on may still have made the run, which then reports back.
OPEN_STATUSES = frozenset(
    {
        Run.Status.SUBMITTING,
        Run.Status.NOT_SUBMITTED,
        Run.Status.QUEUED,
        Run.Status.DISPATCHING,
        Run.Status.RUNNING,
        Run.Status.STALE,
    }
)


class BadResult(ValueError):
    """A payload whose shape or types we cannot take; the message says which field."""


@dataclass(frozen=True)
class ProviderResult:
    run_id: str
    raw_status: str
    status: Run.Status
    output: dict[str, Any] | None
    duration_ms: int | None
    cost: Decimal | None
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    failure_code: str
    failure_stage: str
    failure_message: str
    event: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in Run.TERMINAL_STATUSES


def _str(payload: dict[str, Any], key: str, *, required: bool = False, limit: int = 2000) -> str:
    value = payload.get(key)
    if value is None:
        if required:
            raise BadResult(f"{key} is missing")
        return ""
    if not isinstance(value, str):
        raise BadResult(f"{key} must be a string, not {type(value).__name__}")
    return value[:limit]


def _number(payload: dict[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadResult(f"{key} must be a number or null")
    if value < 0 or value > 10**12:
        raise BadResult(f"{key} is out of range")
    return round(value)


def _time(payload: dict[str, Any], key: str) -> dt.datetime | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadResult(f"{key} must be an ISO 8601 string or null")
    try:
        parsed = parse_datetime(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None:
        raise BadResult(f"{key} is not an ISO 8601 time: {value[:40]!r}")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, dt.UTC)


def _cost(payload: dict[str, Any]) -> Decimal | None:
    value = payload.get("cost")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadResult("cost must be a decimal string or null")
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        raise BadResult("cost is not a number") from None
    if not cost.is_finite() or cost < 0 or cost > 10**6:
        raise BadResult("cost is out of range")
    return cost.quantize(Decimal("0.000001"))


def _common(payload: Any, *, id_key: str, status_key: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise BadResult(f"the body must be a JSON object, not {type(payload).__name__}")
    raw_status = _str(payload, status_key, required=True, limit=40)
    status = STATUSES.get(raw_status.lower())
    if status is None:
        raise BadResult(f"unknown status {raw_status!r}")
    output = payload.get("output")
    if output is not None and not isinstance(output, dict):
        raise BadResult("output must be an object or null")
    error = payload.get("error")
    error_message = error.get("message") if isinstance(error, dict) else None
    return {
        "run_id": _str(payload, id_key, required=True, limit=100),
        "raw_status": raw_status,
        "status": status,
        "output": output,
        "duration_ms": _number(payload, "duration_ms"),
        "cost": _cost(payload),
        "created_at": _time(payload, "created_at"),
        "started_at": _time(payload, "started_at"),
        "completed_at": _time(payload, "completed_at"),
        "failure_code": _str(payload, "failure_code", limit=100),
        # Older pages call it failure_stage.
        "failure_stage": (
            _str(payload, "failure_stage_code", limit=100)
            or _str(payload, "failure_stage", limit=100)
        ),
        "failure_message": _str(payload, "failure_message")
        or (error_message if isinstance(error_message, str) else ""),
    }


def parse_callback(payload: Any) -> ProviderResult:
    fields = _common(payload, id_key="run_id", status_key="status")
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadResult("metadata must be an object or null")
    return ProviderResult(**fields, event=_str(payload, "event", limit=100))


def parse_run_object(payload: Any) -> ProviderResult:
    return ProviderResult(**_common(payload, id_key="id", status_key="status_code"))


def apply_result(run_id: Any, result: ProviderResult, *, source: str) -> str:
    """Record Runflow's verdict on the run. Returns what happened: "applied" (a terminal
    result, now on the run), "progress" (a later non-terminal state), "duplicate" (the same
    terminal result again), "late" (a different one after the first), or "ignored".

    Conditional updates, not read-then-write: a callback and a poll racing for one run can
    both try, on SQLite or PostgreSQL, and exactly one of them changes the row."""
    now = timezone.now()
    if not result.terminal:
        ahead = PROGRESS_ORDER[PROGRESS_ORDER.index(result.status) :]
        behind = [s for s in PROGRESS_ORDER if s not in ahead]
        # Only forwards: a slow poll saying "queued" must not undo a callback's "running".
        moved = Run.objects.filter(
            pk=run_id, status__in=[*behind, Run.Status.SUBMITTING, Run.Status.STALE]
        ).update(
            status=result.status,
            provider_status=result.raw_status,
            updated_at=now,
            **({"started_at": result.started_at} if result.started_at else {}),
        )
        return "progress" if moved else "ignored"

    succeeded = result.status == Run.Status.SUCCEEDED
    fields: dict[str, Any] = {
        "status": result.status,
        "provider_status": result.raw_status,
        "output": result.output,
        "duration_ms": result.duration_ms,
        "cost": result.cost,
        "completed_at": result.completed_at or now,
        "failure_code": result.failure_code,
        "failure_stage": result.failure_stage,
        "failure_message": result.failure_message,
        "result_source": source,
        "result_applied_at": now,
        "lease_until": None,
        "updated_at": now,
        "artifacts": Run.Artifacts.PENDING if succeeded and result.output else Run.Artifacts.NONE,
    }
    if result.started_at:
        fields["started_at"] = result.started_at
    if result.created_at:
        fields["provider_created_at"] = result.created_at
    with transaction.atomic():
        applied = Run.objects.filter(pk=run_id, status__in=OPEN_STATUSES).update(**fields)
        if applied:
            # Runflow answered, so the run exists there even if our create gave up on it.
            Run.objects.filter(pk=run_id, provider_run_id="").update(
                provider_run_id=result.run_id, error_message="", error_code=""
            )
            if fields["artifacts"] == Run.Artifacts.PENDING:
                from .tasks import enqueue_artifacts

                enqueue_artifacts(run_id)
            return "applied"
    current = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    if current == result.status:
        return "duplicate"
    return "late" if current in Run.TERMINAL_STATUSES else "ignored"
