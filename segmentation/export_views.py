"""Exports of a run's results (filled in by the export work)."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET


@require_GET
def export(request: HttpRequest, run_id: Any, fmt: str) -> HttpResponse:
    raise Http404
