"""Callbacks to API callers: when a run with a callback_url ends, sam3web POSTs Runflow's
callback payload to it, signed as Runflow signs (``Runflow-Signature``: lowercase hex
HMAC-SHA256 of the raw body, keyed with the teammate's ``whsec_`` secret), so a receiver
written for Runflow verifies it unchanged.

Delivery is Runflow's: 3 attempts, 1 s and 2 s apart, again only after a 5xx or no answer
(a 4xx is the receiver's verdict). Each attempt is a task of its own, so a slow receiver
holds a worker for one attempt's timeout at most, and the waits between attempts hold
nothing. Every attempt is recorded on the run (its page lists them). The URL passes the
private-address guard when the run is created and again on every attempt: DNS may change."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any

import httpx
from django.conf import settings
from django.db import IntegrityError, transaction
from django.tasks import task
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from accounts.models import Profile
from api.serialize import EVENTS, callback_payload, run_base, status_code
from segmentation.imaging.safe_fetch import FetchError, check_destination, post
from segmentation.models import CallerCallback, Run

logger = logging.getLogger(__name__)

ATTEMPTS = 3
# How far back a starting worker looks for callbacks left behind.
RECOVER_WITHIN = dt.timedelta(days=1)
USER_AGENT = "sam3web/0.1 (+callbacks)"


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def destination_problem(url: str) -> str:
    """Why a callback URL cannot be used ("" when it can): not http(s), no host, or a host
    that resolves to a private, loopback, link-local or metadata address."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        return "callback_url is not a valid URL."
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "callback_url must be an http:// or https:// URL with a host name."
    try:
        check_destination(parsed, timeout=5.0)
    except FetchError as exc:
        return _fetch_problem(exc)
    return ""


def _fetch_problem(exc: FetchError) -> str:
    if exc.kind == "blocked":
        return (
            f"callback_url points to a private or local network address ({exc.host}); "
            "sam3web will not send to it (an admin can allow the host with "
            "SAM3WEB_OUTBOUND_ALLOW)."
        )
    if exc.kind == "dns":
        return f"The host of callback_url ({exc.host}) could not be found."
    if exc.kind == "timeout":
        return f"The host of callback_url ({exc.host}) could not be looked up in time."
    return f"callback_url could not be reached ({exc.kind})."


# --- when a run ends ----------------------------------------------------------------------------


def run_changed_receiver(sender: Any, run_id: Any, run: Run | None = None, **kwargs: Any) -> bool:
    """Queue the caller's callback when a run with a callback_url has just ended (once per
    final status it reaches); whether one was queued. ``run``, when the sender has it loaded,
    spares the read for the runs without a callback_url (most runs): it is set when a run is
    made, never after."""
    if run is not None and not run.callback_url:
        return False
    run = Run.objects.select_related("image").filter(pk=run_id).exclude(callback_url="").first()
    if run is None:
        return False
    status = status_code(run)
    if status not in EVENTS or run.caller_callbacks.filter(key=status).exists():
        return False
    return queue(run, key=status) is not None


def queue(run: Run, *, key: str) -> CallerCallback | None:
    """Store the callback (its exact body) and queue its first attempt; None when one with
    this key was already made (by another worker, say)."""
    payload = callback_payload(run, run_base(run))
    try:
        with transaction.atomic():
            callback = CallerCallback.objects.create(
                run=run,
                key=key,
                event=payload["event"],
                url=run.callback_url,
                request_id=str(uuid.uuid4()),
                body=json.dumps(payload),
            )
            send_caller_callback.enqueue(callback.pk)  # with the change: both or neither
    except IntegrityError:
        return None
    return callback


def redeliver(run: Run) -> CallerCallback:
    """The caller asked for the callback again: a new delivery of the run's current payload."""
    callback = queue(run, key=f"redelivery-{uuid.uuid4().hex[:12]}")
    assert callback is not None  # the key is new
    return callback


def recover(sender: Any = None, **kwargs: Any) -> int:
    """At worker start: queue again the callbacks a stopped worker left behind. A run that
    ended just as its worker died may have no callback yet; one being sent may have lost the
    task of its next attempt. Returns how many were queued."""
    count = 0
    since = timezone.now() - RECOVER_WITHIN
    ended = Run.objects.filter(updated_at__gte=since).exclude(callback_url="")
    for run_id in ended.values_list("pk", flat=True):
        count += run_changed_receiver(None, run_id)
    queued = {
        str(args[0])
        for args in DBTaskResult.objects.filter(
            status="READY", task_path=f"{__name__}.send_caller_callback"
        ).values_list("args_kwargs__args", flat=True)
        if args
    }
    for callback_id in CallerCallback.objects.filter(
        state=CallerCallback.State.SENDING, created_at__gte=since
    ).values_list("pk", flat=True):
        if str(callback_id) not in queued:
            send_caller_callback.enqueue(callback_id)
            count += 1
    return count


# --- sending ------------------------------------------------------------------------------------


@task
def send_caller_callback(callback_id: int) -> str:
    callback = CallerCallback.objects.select_related("run").filter(pk=callback_id).first()
    if callback is None or callback.state != CallerCallback.State.SENDING:
        return "nothing to send"
    number = len(callback.attempts) + 1
    body = callback.body.encode()
    owner = callback.run.owner
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Runflow-Request-Id": callback.request_id,
    }
    if owner is not None:
        headers["Runflow-Signature"] = sign(body, Profile.of(owner).signing_secret())
    started = time.monotonic()
    attempt: dict[str, Any] = {"number": number, "at": timezone.now().isoformat()}
    retry = False
    try:
        answer = post(
            httpx.URL(callback.url),
            body=body,
            headers=headers,
            timeout=settings.SAM3WEB_CALLER_CALLBACK_TIMEOUT,
        )
    except FetchError as exc:
        attempt.update(http_status=None, error=_send_problem(exc))
        retry = exc.kind != "blocked"  # a private address stays private
    except (httpx.InvalidURL, ValueError) as exc:
        attempt.update(http_status=None, error=f"The URL cannot be used: {exc}")
    else:
        attempt.update(http_status=answer.status, error="")
        retry = answer.status >= 500
    attempt["ms"] = round((time.monotonic() - started) * 1000)
    delivered = attempt["http_status"] is not None and 200 <= attempt["http_status"] < 300
    fields: dict[str, Any] = {"attempts": [*callback.attempts, attempt]}
    if delivered:
        fields.update(state=CallerCallback.State.DELIVERED, finished_at=timezone.now())
    elif retry and number < ATTEMPTS:
        wait = settings.SAM3WEB_CALLER_CALLBACK_BACKOFF * 2 ** (number - 1)
        with transaction.atomic():
            CallerCallback.objects.filter(pk=callback.pk).update(**fields)
            send_caller_callback.using(
                run_after=timezone.now() + dt.timedelta(seconds=wait)
            ).enqueue(callback.pk)
        return f"attempt {number} failed; again in {wait:g} s"
    else:
        fields.update(state=CallerCallback.State.FAILED, finished_at=timezone.now())
    CallerCallback.objects.filter(pk=callback.pk).update(**fields)
    return "delivered" if delivered else "not delivered"


def _send_problem(exc: FetchError) -> str:
    if exc.kind == "blocked":
        return f"{exc.host} now resolves to a private or local network address: not sent."
    if exc.kind == "timeout":
        return f"No answer within {settings.SAM3WEB_CALLER_CALLBACK_TIMEOUT:g} s."
    if exc.kind == "dns":
        return f"Could not find the server {exc.host}."
    if exc.kind == "broken":
        return "The connection was closed before an answer came."
    return f"Could not connect to {exc.host} ({exc.kind})."
