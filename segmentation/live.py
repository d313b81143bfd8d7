"""How the run page learns that its live part changed: a long poll.

The page asks for the live part with the version it shows (``?v=…&wait=1``); the request waits,
looking at the run every TICK, until the version changes (then the new part is sent) or WAIT
seconds pass (then 204, and the page asks again). A result is on the page a tick after it is
stored, without the page polling every second. Plain requests keep working the same way, so
htmx's one-second poll stays as the fallback (see static/sam3web/live.js).

Each waiting request holds a web server thread and makes a few indexed queries a tick, which is
cheap at a team's scale; bin/serve gives gunicorn threads for it (sam3web/gunicorn_conf.py)."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce

from segmentation.models import CallbackDelivery, Mask, Run

# Seconds between looks at a run while a request waits for it to change (one query each).
TICK = 0.025
# Shown in the live part: the deliveries table is cut at this many rows.
DELIVERIES_SHOWN = 50

# Set when the web server is stopping (gunicorn_conf's signal hook): waiting requests end now
# rather than hold the server's shutdown for up to WAIT seconds.
stopping = threading.Event()


def version(run: Run, *, deliveries: int, masks: int) -> str:
    """Changes whenever the run page's live part would show something different."""
    return hashlib.blake2s(
        f"{run.status_version}:{min(deliveries, DELIVERIES_SHOWN)}:{masks}".encode(),
        digest_size=6,
    ).hexdigest()


def current_version(run_id: Any) -> str | None:
    """The version of the run as stored now (one query); None when it is gone."""
    run = (
        Run.objects.filter(pk=run_id)
        .annotate(
            n_deliveries=_count(CallbackDelivery.objects.filter(run=OuterRef("pk"))),
            n_masks=_count(Mask.objects.filter(run=OuterRef("pk"))),
        )
        .first()
    )
    if run is None:
        return None
    masks = 0 if run.copying else run.n_masks  # as run_context shows them
    return version(run, deliveries=run.n_deliveries, masks=masks)


def _count(rows: Any) -> Coalesce:
    counted = rows.order_by().values("run").annotate(n=Count("pk")).values("n")[:1]
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def wait_for_change(run_id: Any, seen: str, *, timeout: float | None = None) -> bool:
    """Wait until the run's version is no longer ``seen``; False when the time ran out (or the
    server is stopping) first."""
    timeout = settings.SAM3WEB_LIVE_WAIT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while not stopping.is_set():
        if current_version(run_id) != seen:
            return True
        if time.monotonic() >= deadline:
            return False
        stopping.wait(TICK)
    return False
