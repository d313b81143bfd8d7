"""Two to four runs side by side (``/runs/compare/?ids=…``)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET


@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError
