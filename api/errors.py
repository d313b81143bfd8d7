"""Errors in Runflow's shape: ``{"code", "message", "errors": [{"loc", "msg", "type"}] | null}``,
always JSON, never an HTML page."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.http import JsonResponse

from segmentation.schema import Issue


class ApiError(Exception):
    """An answer other than success; views raise it, ``api_view`` turns it into JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: Iterable[Issue] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})

    def response(self) -> JsonResponse:
        return error_response(
            self.status, self.code, self.message, errors=self.errors, headers=self.headers
        )


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    errors: Iterable[Issue] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "errors": [issue.as_dict() for issue in errors] if errors is not None else None,
    }
    response = JsonResponse(body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def validation(issues: Iterable[Issue], message: str | None = None) -> ApiError:
    """422 VALIDATION_ERROR naming each field ("input.max_masks: ...")."""
    issues = list(issues)
    if message is None:
        first = issues[0]
        where = ".".join(str(part) for part in first.loc)
        message = f"{where}: {first.msg}" if where else first.msg
        if len(issues) > 1:
            message += f" (and {len(issues) - 1} more)"
    return ApiError(422, "VALIDATION_ERROR", message, errors=issues)


def not_found(what: str = "run") -> ApiError:
    if what == "run":
        return ApiError(404, "RUN_NOT_FOUND", "No run with this id.")
    return ApiError(404, "NOT_FOUND", f"No {what} here.")
