"""Runflow's callbacks: the per-run URL we hand out and the checks a delivery must pass.

Each run's callback URL carries a token derived from SECRET_KEY and the run's id, so it is
unguessable without being stored anywhere (secrets never reach the database in clear). When
RUNFLOW_CALLBACK_SECRET is set, the body must also carry Runflow's HMAC signature."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac

SALT = "sam3web.runflow-callback"


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
