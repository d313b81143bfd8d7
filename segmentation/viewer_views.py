"""Data for the run page's canvas viewer (filled in by the viewer work)."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET


@require_GET
def viewer_data(request: HttpRequest, run_id: Any) -> HttpResponse:
    raise Http404


@require_GET
def mask_crop(request: HttpRequest, run_id: Any, number: int) -> HttpResponse:
    raise Http404
