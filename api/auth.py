"""Who is calling: ``Authorization: Bearer sam3web_…`` against the stored hashes, and the
``api_view`` decorator every /v1/ view wears (JSON errors only, never a page; no session,
no CSRF: the token is the credential)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.vary import vary_on_headers

from accounts.models import ApiToken
from api.errors import ApiError, error_response

logger = logging.getLogger(__name__)

# last_used_at is written at most this often per token: not one write per request.
LAST_USE_PRECISION = dt.timedelta(seconds=60)


class TokenRequest(HttpRequest):
    """A request ``api_view`` let through: the token it came with, its teammate as the user."""

    api_token: ApiToken


View = Callable[..., HttpResponseBase]


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "UNAUTHORIZED", message, headers={"WWW-Authenticate": 'Bearer realm="sam3web"'}
    )


def authenticate(request: HttpRequest) -> ApiToken:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.strip().partition(" ")
    if not header:
        raise unauthorized(
            "Give your sam3web API token: Authorization: Bearer sam3web_… "
            "(make one on the API page)."
        )
    if scheme.lower() != "bearer" or not given.strip():
        raise unauthorized("The Authorization header must be: Bearer sam3web_…")
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=ApiToken.digest_of(given.strip()))
        .first()
    )
    if token is None:
        raise unauthorized("This API token is not valid.")
    if token.revoked_at is not None:
        raise unauthorized("This API token was revoked.")
    if not token.user.is_active:
        raise unauthorized("The account this API token belongs to is disabled.")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USE_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def api_view(*methods: str, public: bool = False) -> Callable[[View], View]:
    """A /v1/ view: only ``methods`` (405 otherwise), a valid token unless ``public``, and
    every failure answered in Runflow's error shape."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @login_not_required
        @vary_on_headers("Authorization")
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method not in methods:
                    raise ApiError(
                        405,
                        "METHOD_NOT_ALLOWED",
                        f"{request.method} is not allowed here; use {' or '.join(methods)}.",
                        headers={"Allow": ", ".join(methods)},
                    )
                if not public:
                    token = authenticate(request)
                    request.api_token = token  # type: ignore[attr-defined]
                    request.user = token.user
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()
            except Http404:
                return error_response(404, "NOT_FOUND", "Nothing here (any more).")
            except DataError:
                # A value the database would not store, that validation let through.
                logger.exception("API request refused by the database")
                return error_response(
                    422, "VALIDATION_ERROR", "A value in the request cannot be stored."
                )
            except (OperationalError, InterfaceError):
                logger.exception("API request failed on the database")
                return error_response(
                    503,
                    "SERVICE_UNAVAILABLE",
                    "The database is busy; try again in a moment.",
                    headers={"Retry-After": "2"},
                )
            except Exception:
                logger.exception("API request failed")
                return error_response(
                    500, "INTERNAL_ERROR", "sam3web failed to answer this request."
                )

        return wrapper

    return decorate
