"""/healthz: whether this install can do its work, for a load balancer or a monitor.

Four checks, each answered in the body: the database (a trivial query), storage (a tiny object
written, read back and removed, through whatever storage is configured), the workers (a
heartbeat seen lately) and the queue (how many tasks are ready, and how long the oldest has
waited). 200 when all pass, 503 naming what failed; never a 500, never a secret.

The checks run in threads of their own with a deadline, so a database or a bucket that does not
answer makes a quick 503 instead of a request that hangs until the load balancer gives up."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import Count, Min, Q
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django_tasks_db.models import DBTaskResult, get_date_max

from segmentation.models import WorkerHeartbeat

Check = dict[str, Any]

PROBE = b"sam3web health probe"


def check_database() -> Check:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True}


def check_storage() -> Check:
    name = default_storage.save(f"healthz/{uuid.uuid4().hex}.txt", ContentFile(PROBE))
    try:
        with default_storage.open(name, "rb") as f:
            read = f.read()
    finally:
        default_storage.delete(name)
    if read != PROBE:
        return {"ok": False, "reason": "storage gave back other bytes than were written"}
    return {"ok": True}


def check_workers() -> Check:
    dead_after = float(getattr(settings, "SAM3WEB_WORKER_DEAD_AFTER", 15))
    since = timezone.now() - dt.timedelta(seconds=dead_after)
    live = WorkerHeartbeat.objects.filter(seen_at__gte=since).count()  # seen_at is indexed
    if not live:
        return {"ok": False, "live": 0, "reason": "no live worker"}
    return {"ok": True, "live": live}


def check_queue() -> Check:
    """Ready tasks and the wait of the oldest: one aggregate over the READY rows only (the
    task table's partial index), however many finished rows the table holds."""
    now = timezone.now()
    never = get_date_max()  # django_tasks_db's "run as soon as possible"
    figures = DBTaskResult.objects.filter(status="READY").aggregate(
        ready=Count("pk", filter=Q(run_after=never) | Q(run_after__lte=now)),
        oldest_enqueued=Min("enqueued_at", filter=Q(run_after=never)),
        oldest_due=Min("run_after", filter=Q(run_after__lte=now)),
    )
    since = [t for t in (figures["oldest_enqueued"], figures["oldest_due"]) if t is not None]
    waited = max(0.0, (now - min(since)).total_seconds()) if since else 0.0
    limit = settings.SAM3WEB_HEALTH_MAX_QUEUE_AGE
    result: Check = {"ok": waited <= limit, "ready": figures["ready"], "oldest_wait_s": waited}
    if waited > limit:
        result["reason"] = f"the oldest ready task has waited {waited:.0f} s (limit {limit} s)"
    return result


def _database_checks() -> dict[str, Check]:
    """The three checks that read the database, in one thread and on one connection: when the
    database is down the first fails and the other two say they could not look."""
    checks: dict[str, Check] = {}
    try:
        checks["database"] = check_database()
    except Exception as exc:
        checks["database"] = {"ok": False, "reason": failure(exc)}
        cannot = {"ok": False, "reason": "not checked: the database is unreachable"}
        return {**checks, "workers": cannot, "queue": dict(cannot)}
    for name, check in (("workers", check_workers), ("queue", check_queue)):
        try:
            checks[name] = check()
        except Exception as exc:
            checks[name] = {"ok": False, "reason": failure(exc)}
    return checks


def _storage_checks() -> dict[str, Check]:
    try:
        return {"storage": check_storage()}
    except Exception as exc:
        return {"storage": {"ok": False, "reason": failure(exc)}}


def failure(exc: BaseException) -> str:
    """What failed, by the kind of error only: a driver's message can carry a host name, a
    user or a bucket, which a public page must not show."""
    return f"{type(exc).__module__}.{type(exc).__name__}"


def _in_thread(work: Callable[[], dict[str, Check]], names: list[str]) -> Any:
    """Start ``work`` in a daemon thread; the answer, or a time-out for each of ``names``."""
    answer: dict[str, dict[str, Check]] = {}

    def target() -> None:
        try:
            answer["checks"] = work()
        finally:
            # The thread's own database connection, which nothing else would close.
            connection.close()

    thread = threading.Thread(target=target, name="healthz", daemon=True)
    thread.start()

    def result(deadline: float) -> dict[str, Check]:
        thread.join(max(0.0, deadline - time.monotonic()))
        if "checks" in answer:
            return answer["checks"]
        return {name: {"ok": False, "reason": "timed out"} for name in names}

    return result


def run_checks() -> dict[str, Check]:
    deadline = time.monotonic() + settings.SAM3WEB_HEALTH_TIMEOUT
    database = _in_thread(_database_checks, ["database", "workers", "queue"])
    storage = _in_thread(_storage_checks, ["storage"])
    return {**database(deadline), **storage(deadline)}


@login_not_required
@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    checks = run_checks()
    reasons = [
        f"{name}: {check.get('reason', 'failing')}"
        for name, check in checks.items()
        if not check["ok"]
    ]
    body = {"ok": not reasons, "reasons": reasons, "checks": checks}
    return JsonResponse(body, status=200 if not reasons else 503)
