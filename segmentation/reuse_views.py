"""Same prompts on other images: new runs from an earlier run's prompts and options."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_http_methods


@require_http_methods(["GET", "POST"])
def run_reuse(request: HttpRequest, run_id: Any) -> HttpResponse:
    raise NotImplementedError
