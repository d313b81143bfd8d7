"""sam3web's /v1/: Runflow's API for SAM 3, answered by sam3web for the team's scripts.

Code written for Runflow works by changing the base URL and the key: the same paths, bodies,
run objects, errors and callbacks (docs: the API page, and /v1/openapi.json). Every run made
here is an ordinary run: validated by the run form's schema, its image taken in by the same
intake (SSRF guard, size and pixel limits, EXIF), charged against its owner's budget, sent
with sam3web's own Runflow key, and shown in the history under the teammate whose token made
it."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core import signing
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils.dateparse import parse_datetime

from accounts import budgets
from api import callbacks
from api.auth import TokenRequest, api_view
from api.errors import ApiError, not_found, validation
from api.serialize import (
    EVENTS,
    MODEL_ID,
    RUN_STATUSES,
    base_url,
    content_type_of,
    iso,
    run_object,
    status_code,
    unsign_file,
)
from segmentation import engines, runs, schema
from segmentation.imaging.decode import ImageRejected
from segmentation.imaging.intake import IntakeResult, intake_data_uri, intake_url
from segmentation.imaging.store import store_image
from segmentation.models import CallerCallback, Run
from segmentation.schema import Issue
from segmentation.views._common import serve

MAX_IDEMPOTENCY_KEY = 255
DEFAULT_LIMIT = 50
CURSOR_SALT = "sam3web.api-cursor"
S = Run.Status
# The caller's statuses, as our own (serialize.status_code read backwards).
STATUS_FILTERS: dict[str, Q] = {
    "queued": Q(status__in=[S.WAITING, S.PENDING, S.SUBMITTING, S.QUEUED]),
    "dispatching": Q(status=S.DISPATCHING),
    "running": Q(status=S.RUNNING)
    | Q(status=S.SUCCEEDED, artifacts__in=[Run.Artifacts.PENDING, Run.Artifacts.COPYING]),
    "succeeded": Q(status=S.SUCCEEDED)
    & ~Q(artifacts__in=[Run.Artifacts.PENDING, Run.Artifacts.COPYING]),
    "failed": Q(status__in=[S.FAILED, S.NOT_SUBMITTED, S.STALE]),
    "canceled": Q(status=S.CANCELED),
}
STATUS_FILTERS["cancelled"] = STATUS_FILTERS["canceled"]


# --- creating a run -----------------------------------------------------------------------------


@api_view("POST")
def create_run(request: TokenRequest, model_id: str = MODEL_ID) -> JsonResponse:
    if model_id.strip("/") != MODEL_ID:
        raise ApiError(
            404, "MODEL_NOT_FOUND", f"sam3web runs one model, {MODEL_ID}, not {model_id}."
        )
    token = request.api_token
    user = token.user
    body = _json_body(request)
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    submission_key = _submission_key(request)
    if submission_key:
        earlier = Run.objects.filter(owner=user, submission_key=submission_key).first()
        if earlier is not None:
            return _replay(request, earlier, digest)

    try:
        cleaned = schema.validate_body(body, require_prompt=True)
        metadata = schema.clean_metadata(cleaned.get("metadata"))
    except schema.SchemaError as exc:
        raise validation(exc.issues) from None
    callback_url = cleaned.get("callback_url") or ""
    if callback_url:
        problem = callbacks.destination_problem(callback_url)
        if problem:
            raise validation([Issue(("callback_url",), problem, "value_error")])
    unavailable = engines.get().unavailable()
    if unavailable:
        raise ApiError(503, "MODEL_UNAVAILABLE", unavailable, headers={"Retry-After": "60"})
    # Refused before the image is fetched when it is plain they would be (the real check is
    # create_run's, under its lock).
    _check_allowance(user)

    input = dict(cleaned["input"])
    taken, source_url, name = _take_image(str(input.pop("image_url")).strip())
    issues = schema.outside_image(
        input.get("point_prompts") or [],
        input.get("box_prompts") or [],
        (taken.width, taken.height),
    )
    if issues:
        raise validation(issues)
    image = store_image(taken, original_name=name[:255])
    try:
        run = runs.create_run(
            owner=user,
            image=image,
            input=input,
            metadata=metadata,
            source_url=source_url,
            submission_key=submission_key,
            api=runs.ApiRequest(
                token=token,
                client_ref=cleaned.get("client_ref") or "",
                callback_url=callback_url,
                base_url=base_url(request),
                request_sha256=digest,
            ),
        )
    except runs.AlreadySubmitted as done:  # the same key, raced from another client
        return _replay(request, done.run, digest)
    except budgets.RateLimited as exc:
        raise _rate_limited(exc) from None
    except budgets.BudgetExceeded as exc:
        raise ApiError(402, "INSUFFICIENT_CREDIT", str(exc)) from None
    return JsonResponse(run_object(run, base_url(request)), status=201)


def _submission_key(request: HttpRequest) -> str:
    """The Idempotency-Key as the run's submission key: per teammate (the key's uniqueness is
    per owner), apart from the forms' keys, and of fixed length whatever the caller sent."""
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise validation(
            [
                Issue(
                    ("header", "Idempotency-Key"),
                    f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters long.",
                    "string_too_long",
                )
            ]
        )
    return "api:" + hashlib.sha256(key.encode()).hexdigest() if key else ""


def _take_image(image_url: str) -> tuple[IntakeResult, str, str]:
    """The image through the run form's intake: (what to store, the URL it came from, a
    name for people)."""
    try:
        if image_url[:5].lower() == "data:":
            return intake_data_uri(image_url), "", "inline image"
        name = image_url.split("?", 1)[0].rsplit("/", 1)[-1] or "image"
        return intake_url(image_url), image_url, name
    except ImageRejected as exc:
        raise validation([Issue(("input", "image_url"), str(exc), exc.code)]) from None


def _json_body(request: HttpRequest) -> Any:
    limit = settings.SAM3WEB_API_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    too_large = ApiError(
        413,
        "PAYLOAD_TOO_LARGE",
        f"The body is larger than {limit:,} bytes. Give a large image by URL instead of inline.",
    )
    if declared > limit:
        _drain(request, declared)
        raise too_large
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise too_large
    if not raw.strip():
        raise validation([Issue(("body",), "The body is empty: send a JSON object.", "missing")])
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise validation(
            [Issue(("body",), f"The body is not valid JSON ({exc}).", "json_invalid")]
        ) from None
    bad = _first_bad_text(value, ())
    if bad is not None:
        # Valid JSON, but not text a database can store: PostgreSQL refuses \u0000, and a
        # lone surrogate (\ud800) is no character at all.
        raise validation(
            [
                Issue(
                    bad or ("body",),
                    "Text must not contain \\u0000 or unpaired surrogates (\\ud800).",
                    "value_error",
                )
            ]
        )
    return value


def _bad_text(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _first_bad_text(value: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """Where the first text that cannot be stored is, if any (keys included)."""
    if isinstance(value, str):
        return loc if _bad_text(value) else None
    items: Any = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    for key, item in items:
        here = (*loc, key)
        if isinstance(key, str) and _bad_text(key):
            return here
        found = _first_bad_text(item, here)
        if found is not None:
            return found
    return None


def _drain(request: HttpRequest, declared: int) -> None:
    """Read (and drop) a refused body of sensible size, so the client, still sending, reads
    our 413 instead of a reset connection."""
    if declared > 8 * settings.SAM3WEB_API_MAX_BODY_BYTES:
        return
    while request.read(64 * 1024):
        pass


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _replay(request: HttpRequest, run: Run, digest: str) -> JsonResponse:
    """Runflow's idempotency: the same key and body answer with the run they made; the same
    key with another body is a conflict."""
    if run.request_sha256 != digest:
        raise ApiError(
            409,
            "CONFLICT",
            "This Idempotency-Key was already used with a different body. Use a new key for "
            "a new run.",
        )
    response = JsonResponse(run_object(run, base_url(request)), status=201)
    response["Idempotent-Replayed"] = "true"
    return response


def _check_allowance(user: Any) -> None:
    wait = budgets.rate_wait(user)
    if wait:
        raise _rate_limited(budgets.RateLimited(wait))
    reason = budgets.refusal(user)
    if reason:
        raise ApiError(402, "INSUFFICIENT_CREDIT", reason)


def _rate_limited(exc: budgets.RateLimited) -> ApiError:
    return ApiError(429, "RATE_LIMITED", str(exc), headers={"Retry-After": str(exc.retry_after)})


# --- reading runs -------------------------------------------------------------------------------


def _run_or_404(run_id: str) -> Run:
    try:
        pk = uuid.UUID(str(run_id))
    except ValueError:
        raise not_found() from None
    run = Run.objects.select_related("image").filter(pk=pk).first()
    if run is None:
        raise not_found()
    return run


def _own_run_or_404(request: TokenRequest, run_id: str) -> Run:
    """Writes touch only the caller's own runs; another's is as good as missing."""
    run = _run_or_404(run_id)
    if run.owner_id != request.api_token.user_id:
        raise not_found()
    return run


@api_view("GET")
def run_detail(request: TokenRequest, run_id: str) -> JsonResponse:
    """Any teammate's run, as the web app shows every run to every teammate (another's
    callback_url left out: it may carry a secret of theirs)."""
    run = _run_or_404(run_id)
    data = run_object(run, base_url(request))
    if run.owner_id != request.api_token.user_id:
        data["callback_url"] = None
    return JsonResponse(data)


@api_view("GET")
def run_list(request: TokenRequest) -> JsonResponse:
    """The caller's runs, newest first: ``limit`` (1–500), the cursor ``pq`` from ``next_pq``,
    ``status`` (or Runflow's ``q=status_code:…``) and ``q=client_ref:…`` to keep some."""
    limit = _limit(request.GET.get("limit"))
    runs_qs = (
        Run.objects.filter(owner=request.api_token.user)
        .select_related("image")
        .prefetch_related("masks")
        .order_by("-created_at", "-id")
    )
    runs_qs = runs_qs.filter(_filters(request))
    cursor = request.GET.get("pq")
    if cursor:
        created_at, pk = _cursor(cursor)
        runs_qs = runs_qs.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=pk))
    rows = list(runs_qs[: limit + 1])
    base = base_url(request)
    next_pq = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_pq = signing.dumps([last.created_at.isoformat(), str(last.pk)], salt=CURSOR_SALT)
    next_url = None
    if next_pq:
        query = request.GET.copy()
        query["pq"] = next_pq
        next_url = base + reverse("api_runs") + "?" + query.urlencode()
    return JsonResponse(
        {
            "items": [run_object(run, base) for run in rows],
            "next_pq": next_pq,
            "prev_pq": None,
            "next": next_url,
            "limit": limit,
        }
    )


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,4}", raw.strip()) or not 1 <= int(raw) <= 500:
        raise validation(
            [Issue(("query", "limit"), "limit must be a whole number from 1 to 500.", "int_type")]
        )
    return int(raw)


def _filters(request: HttpRequest) -> Q:
    """``status=a,b`` and Runflow's ``q=status_code:a AND client_ref:b``, as one condition."""
    wanted: list[str] = []
    for raw in request.GET.getlist("status"):
        wanted += [part.strip().lower() for part in raw.split(",") if part.strip()]
    condition = Q()
    q = request.GET.get("q", "").strip()
    if q:
        for clause in q.replace(" and ", " AND ").split(" AND "):
            name, _, value = clause.strip().partition(":")
            name, value = name.strip(), value.strip()
            if name == "status_code" and value:
                wanted.append(value.lower())
            elif name == "client_ref" and value:
                condition &= Q(client_ref=value)
            else:
                raise validation(
                    [
                        Issue(
                            ("query", "q"),
                            "q filters by status_code and client_ref here, like "
                            "q=status_code:succeeded AND client_ref:row-17.",
                            "value_error",
                        )
                    ]
                )
    unknown = [status for status in wanted if status not in STATUS_FILTERS]
    if unknown:
        known = ", ".join(s for s in STATUS_FILTERS if s != "cancelled")
        raise validation(
            [
                Issue(
                    ("query", "status"),
                    f"Unknown status {unknown[0]!r}; use one of {known}.",
                    "enum",
                )
            ]
        )
    if wanted:
        either = Q()
        for status in wanted:
            either |= STATUS_FILTERS[status]
        condition &= either
    return condition


def _cursor(raw: str) -> tuple[Any, uuid.UUID]:
    refused = validation(
        [Issue(("query", "pq"), "pq is not a cursor this API gave out.", "value_error")]
    )
    try:
        value = signing.loads(raw, salt=CURSOR_SALT)
        created_at = parse_datetime(value[0])
        pk = uuid.UUID(value[1])
    except (signing.BadSignature, ValueError, TypeError, IndexError, KeyError):
        raise refused from None
    if created_at is None:
        raise refused
    return created_at, pk


@api_view("GET")
def run_statuses(request: TokenRequest) -> JsonResponse:
    """Runflow's list of the statuses a run reads as, in their order."""
    return JsonResponse({"items": RUN_STATUSES})


# --- the caller ---------------------------------------------------------------------------------


def _dollars(amount: Decimal | None) -> str | None:
    return None if amount is None else f"{amount.normalize():f}"


@api_view("GET")
def auth_me(request: TokenRequest) -> JsonResponse:
    """Who the token belongs to, and what they may still spend: Runflow's key check, with
    sam3web's budget and rate limit (a script can check before a long job)."""
    token = request.api_token
    standing = budgets.standing(token.user)
    return JsonResponse(
        {
            "id": token.user_id,
            "username": token.user.get_username(),
            "token": {
                "name": token.name,
                "hint": token.hint,
                "created_at": iso(token.created_at),
                "last_used_at": iso(token.last_used_at),
            },
            "budget": {
                "monthly": _dollars(standing.budget),
                "spent_this_month": _dollars(standing.spent),
                "team_monthly": _dollars(standing.team_budget),
                "team_spent_this_month": _dollars(standing.team_spent),
                "left": _dollars(standing.left),
                "price_per_run": _dollars(settings.SAM3WEB_PRICE_PER_IMAGE),
            },
            "rate_limit_per_minute": settings.SAM3WEB_API_RATE_PER_MINUTE,
        }
    )


# --- callbacks ----------------------------------------------------------------------------------


def _delivery(callback: CallerCallback) -> dict[str, Any]:
    return {
        "id": callback.pk,
        "event": callback.event,
        "url": callback.url,
        "request_id": callback.request_id,
        "state": callback.state,
        "attempts": callback.attempts,
        "created_at": callback.created_at.isoformat(),
        "finished_at": callback.finished_at.isoformat() if callback.finished_at else None,
    }


@api_view("GET")
def run_callbacks(request: TokenRequest, run_id: str) -> JsonResponse:
    """The callbacks sent (or being sent) to the run's callback_url, each with its attempts
    (the caller's own runs only: the URL may carry a secret)."""
    run = _own_run_or_404(request, run_id)
    return JsonResponse({"items": [_delivery(c) for c in run.caller_callbacks.all()]})


@api_view("POST")
def run_callback_redelivery(request: TokenRequest, run_id: str) -> JsonResponse:
    """Send the run's callback again (its owner only)."""
    run = _own_run_or_404(request, run_id)
    if not run.callback_url:
        raise ApiError(422, "VALIDATION_ERROR", "This run was made without a callback_url.")
    if status_code(run) not in EVENTS:
        raise ApiError(
            409, "CONFLICT", "The run has not ended yet: its callback comes when it does."
        )
    return JsonResponse(_delivery(callbacks.redeliver(run)), status=201)


# --- files and the rest -------------------------------------------------------------------------


@api_view("GET", "HEAD", public=True)
def api_file(request: HttpRequest, token: str, name: str) -> HttpResponseBase:
    """A file of a run's output, by the signed link in the run object: no header needed,
    gone when the link expires or the run is deleted."""
    gone = ApiError(404, "NOT_FOUND", "This link has expired, or its run was deleted.")
    signed = unsign_file(token)
    if signed is None:
        raise gone
    run_id, kind, index = signed
    run = Run.objects.select_related("image").filter(pk=run_id).first()
    if run is None:
        raise gone
    if kind == "mask" and index is not None:
        mask = run.masks.filter(index=index).first()
        if mask is None or not mask.file:
            raise gone
        return serve(mask.file, "image/png")
    if kind == "preview" and run.preview:
        return serve(run.preview, content_type_of(run.preview))
    if kind == "image":
        return serve(run.image.file, run.image.content_type)
    raise gone


@api_view("GET", "POST", "PUT", "PATCH", "DELETE", public=True)
def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    raise not_found("such endpoint; see /v1/openapi.json")
