"""Public read-only links to a run, made and revoked by its owner."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_POST


@require_POST
def run_share(request: HttpRequest, run_id: Any) -> HttpResponse:
    raise NotImplementedError


@require_POST
def run_unshare(request: HttpRequest, run_id: Any) -> HttpResponse:
    raise NotImplementedError
