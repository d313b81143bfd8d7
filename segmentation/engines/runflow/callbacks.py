"""Runflow's callbacks: the per-run URL we hand out, the checks a delivery must pass, and the
view that receives them.

Each run's callback URL carries a token derived from SECRET_KEY and the run's id, so it is
unguessable without being stored anywhere (secrets never reach the database in clear). When
RUNFLOW_CALLBACK_SECRET is set, the body must also carry Runflow's HMAC signature. Every
delivery is recorded on its run, whatever its fate."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from segmentation.engines.base import apply_result
from segmentation.engines.runflow.parse import BadResult, parse_callback
from segmentation.models import CallbackDelivery, Run
from segmentation.tasks import changed

logger = logging.getLogger(__name__)

SALT = "sam3web.runflow-callback"
DELIVERY_BODY_KEPT = 256 * 1024
FORGED_BODY_KEPT = 2048


def callback_token(run_id: Any, *, secret: str | None = None) -> str:
    return salted_hmac(SALT, str(run_id), secret=secret, algorithm="sha256").hexdigest()


def token_is_valid(run_id: Any, token: str) -> bool:
    # Tokens made under a previous SECRET_KEY stay valid while it is a fallback.
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return any(constant_time_compare(token, callback_token(run_id, secret=s)) for s in secrets)


def callback_url(run_id: Any) -> str | None:
    """Where Runflow should POST this run's result, or None when it cannot reach us."""
    base = settings.SAM3WEB_PUBLIC_URL
    if not base:
        return None
    return base + reverse("runflow_callback", args=[run_id, callback_token(run_id)])


def signature_verdict(body: bytes, header: str | None) -> str:
    """ "valid", "invalid", "missing", or "not_checked" when no secret is configured.

    Several secrets may be valid at once while one is being rotated."""
    secrets = settings.RUNFLOW_CALLBACK_SECRETS
    if not secrets:
        return "not_checked"
    if not header:
        return "missing"
    # Bytes, not str: compare_digest refuses non-ASCII text, and a forged header may carry it.
    given = header.strip().lower().encode("utf-8", "replace")
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(expected, given):
            return "valid"
    return "invalid"


@csrf_exempt  # Runflow cannot send our CSRF token; the token in the URL and the HMAC guard it
@login_not_required
@require_POST
def runflow_callback(request: HttpRequest, run_id: Any, token: str) -> JsonResponse:
    """Runflow reports a finished run. Answer fast (downloads happen later, in the worker),
    200 for anything valid (also a duplicate or a late one, so Runflow stops retrying), and a
    4xx with the reason otherwise. Every delivery is recorded, whatever its fate."""
    try:
        return _receive_callback(request, run_id, token)
    except DatabaseError:
        # Busy database: a 5xx makes Runflow retry, and polling is the safety net besides.
        logger.exception("Callback for run %s could not be stored", run_id)
        response = JsonResponse({"ok": False, "reason": "busy, retry"}, status=503)
        response["Retry-After"] = "2"
        return response


def _receive_callback(request: HttpRequest, run_id: Any, token: str) -> JsonResponse:
    run = Run.objects.filter(pk=run_id).only("pk", "provider_run_id", "callback_url").first()
    limit = settings.SAM3WEB_CALLBACK_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    body = b"" if declared > limit else request.read(limit + 1)
    delivery = CallbackDelivery(
        run=run,
        request_id=request.headers.get("Runflow-Request-Id", "")[:200],
        signature=CallbackDelivery.Signature.NOT_CHECKED,
        body=body[:DELIVERY_BODY_KEPT].decode("utf-8", "replace"),
        body_bytes=max(declared, len(body)),
        body_truncated=len(body) > DELIVERY_BODY_KEPT or declared > limit,
    )

    def answer(status: int, outcome: str, reason: str = "") -> JsonResponse:
        delivery.http_status, delivery.outcome, delivery.reason = status, outcome, reason
        delivery.save()
        logger.info(
            "run=%s event=callback outcome=%s http_status=%s provider_status=%s",
            run_id, outcome, status, delivery.provider_status or "-",
        )  # fmt: skip
        return JsonResponse(
            {"ok": status == 200, "outcome": outcome, "reason": reason}, status=status
        )

    if run is None or not token_is_valid(run_id, token):
        # A forged token for a real run is kept in that run's log, for people to see; only
        # an excerpt of its body, as anyone who knows a run's id can send these.
        delivery.body = delivery.body[:FORGED_BODY_KEPT]
        delivery.body_truncated = delivery.body_bytes > FORGED_BODY_KEPT
        return answer(404, "rejected", "no such run, or the link's token is wrong")
    if len(body) > limit or declared > limit:
        return answer(413, "rejected", f"the body is larger than {limit} bytes")
    delivery.signature = signature_verdict(body, request.headers.get("Runflow-Signature"))
    if delivery.signature in ("missing", "invalid"):
        return answer(401, "rejected", f"signature {delivery.signature}")
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except ValueError:  # also UnicodeDecodeError, and NaN/Infinity, which JSON does not have
        return answer(400, "rejected", "the body is not JSON")
    try:
        result = parse_callback(payload)
    except BadResult as exc:
        return answer(400, "rejected", str(exc))
    delivery.event, delivery.provider_status = result.event, result.raw_status
    if run.provider_run_id and result.run_id != run.provider_run_id:
        return answer(400, "rejected", "run_id does not match this run")
    with transaction.atomic():
        outcome = apply_result(run.pk, result, source="callback")
        changed(run)
        return answer(200, outcome)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
