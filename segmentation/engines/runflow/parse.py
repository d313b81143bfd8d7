"""Runflow's verdict on a run, in the two shapes it comes in: a callback's payload and a run
object (a poll's answer). Both become one ``ProviderResult``, refusing wrong types with a
reason; ``STATUSES`` maps Runflow's status words onto ours."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from segmentation.engines.base import ProviderResult
from segmentation.models import Run

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


class BadResult(ValueError):
    """A payload whose shape or types we cannot take; the message says which field."""


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
    for key in ("created_at", "started_at"):
        _time(payload, key)  # not kept, but a payload with nonsense in them is refused
    error = payload.get("error")
    error_message = error.get("message") if isinstance(error, dict) else None
    return {
        "run_id": _str(payload, id_key, required=True, limit=100),
        "raw_status": raw_status,
        "status": status,
        "output": output,
        "duration_ms": _number(payload, "duration_ms"),
        "cost": _cost(payload),
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
