"""What the team spends: totals per teammate and per month."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET


@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError
