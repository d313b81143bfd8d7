"""What a person (or an API caller) gets while the database is unreachable: a short 503 that
says so and when to try again, instead of a server error page. Nothing is written half: the
request's transaction never began or is rolled back, and the next request opens a new
connection (CONN_MAX_AGE is 0), so service resumes by itself once the database is back."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from django.db.utils import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views import defaults

from api.errors import error_response

logger = logging.getLogger(__name__)

MESSAGE = "sam3web cannot reach its database; try again in a moment."
RETRY_AFTER = "5"

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sam3web is unavailable</title></head>
<body><h1>sam3web is unavailable</h1><p>{MESSAGE}</p></body></html>
"""


class DatabaseUnavailableMiddleware:
    """A view that finds the database gone answers 503 (the rest: see ``server_error``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if isinstance(exc, (OperationalError, InterfaceError)):
            return unavailable(request, exc)
        return None


def server_error(request: HttpRequest) -> HttpResponse:
    """The 500 handler (urls.handler500). Django turns an error raised outside a view (by a
    middleware: loading the session, the signed-in user) into a response before any middleware
    can look at it, so the database's absence is recognised here as well, where the error
    being handled is still known."""
    exc = sys.exception()
    if isinstance(exc, (OperationalError, InterfaceError)):
        return unavailable(request, exc)
    return defaults.server_error(request)


def unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.error("Database unreachable during %s %s: %s", request.method, request.path, exc)
    if request.path.startswith("/v1/"):
        response: HttpResponse = error_response(503, "SERVICE_UNAVAILABLE", MESSAGE)
    else:
        response = HttpResponse(PAGE, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = RETRY_AFTER
    response["Cache-Control"] = "no-store"
    return response
