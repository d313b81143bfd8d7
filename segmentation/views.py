from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from . import callbacks, exports, history
from .deletion import delete_run
from .forms import RunForm
from .history import HistoryFilter
from .models import CallbackDelivery, Mask, Run, SourceImage
from .results import BadResult, apply_result, parse_callback
from .tasks import check_again, enqueue_submit, resubmit, retry_artifacts

DELIVERY_BODY_KEPT = 256 * 1024
FORGED_BODY_KEPT = 2048
logger = logging.getLogger(__name__)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("run_new")


@login_not_required
@require_http_methods(["GET", "POST"])
def first_admin(request: HttpRequest) -> HttpResponse:
    """On a fresh install with no users, offer to create the first admin account."""
    User = get_user_model()
    if User.objects.exists():
        return redirect("login")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            # Two people racing through setup: only the first one becomes the admin.
            if User.objects.select_for_update().exists():
                return redirect("login")
            user = form.save(commit=False)
            user.is_staff = user.is_superuser = True
            user.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_username()}. You are this team's admin.")
        return redirect("run_new")
    return render(request, "registration/first_admin.html", {"form": form})


@require_http_methods(["GET", "POST"])
def run_new(request: HttpRequest) -> HttpResponse:
    configured = bool(settings.RUNFLOW_API_KEY)
    form = RunForm(request.POST or None, request.FILES or None, user=request.user)
    if request.method == "GET" and request.GET.get("from"):
        keep_prompts = request.GET.get("keep") != "image"
        form = _form_from_run(request, request.GET["from"], keep_prompts=keep_prompts) or form
    if request.method == "POST":
        if not configured:
            form.is_valid()
            form.add_error(None, "Runs cannot be submitted: no Runflow API key is configured.")
        elif form.is_valid():
            with transaction.atomic():
                run = form.save(request.user)
                enqueue_submit(run)
            return redirect(run)
    status = 400 if form.is_bound else 200
    return render(
        request,
        "segmentation/run_new.html",
        {"form": form, "configured": configured},
        status=status,
    )


def _form_from_run(
    request: HttpRequest, run_id: str, *, keep_prompts: bool = True
) -> RunForm | None:
    """The form filled in as an earlier run was: same image and options, and its prompts too
    unless the person asked for the same image with a new prompt."""
    try:
        run = Run.objects.select_related("image").filter(pk=run_id).first()
    except ValidationError:  # not a UUID: ignore it, show an empty form
        return None
    if run is None:
        return None
    initial = {**run.input, "metadata": run.metadata, "parent": run.pk}
    if not keep_prompts:
        for name in ("prompt", "point_prompts", "box_prompts", "parent"):
            initial.pop(name, None)
    form = RunForm(initial=initial, user=request.user)
    form.source_image = run.image
    form.source_url = run.source_url
    return form


def _run_or_404(run_id: Any) -> Run:
    return get_object_or_404(Run.objects.select_related("image", "owner"), pk=run_id)


@require_GET
def run_detail(request: HttpRequest, run_id: Any) -> HttpResponse:
    run = _run_or_404(run_id)
    return render(request, "segmentation/run_detail.html", _run_context(run, request))


@require_GET
def run_status(request: HttpRequest, run_id: Any) -> HttpResponse:
    """The live part of the run page, polled until nothing on it will change by itself."""
    run = _run_or_404(run_id)
    context = _run_context(run, request)
    if request.GET.get("v") == context["version"] and not run.settled:
        # Nothing new: htmx leaves the page as it is (an opened <details> stays open).
        return HttpResponse(status=204)
    response = render(request, "segmentation/run_detail.html#live", context)
    if run.settled:
        return HttpResponseStopPolling(response.content)
    return response


@require_POST
def run_resubmit(request: HttpRequest, run_id: Any) -> HttpResponse:
    return _act(
        request,
        run_id,
        resubmit,
        done="Submitting the run again.",
        refused="This run is not waiting to be submitted again.",
    )


@require_POST
def run_check_again(request: HttpRequest, run_id: Any) -> HttpResponse:
    return _act(
        request,
        run_id,
        check_again,
        done="Asking Runflow about this run again.",
        refused="This run is not waiting for a result.",
    )


@require_POST
def run_retry_copy(request: HttpRequest, run_id: Any) -> HttpResponse:
    return _act(
        request,
        run_id,
        retry_artifacts,
        done="Copying the missing masks again.",
        refused="Nothing is missing from this run.",
    )


def _act(
    request: HttpRequest, run_id: Any, action: Callable[[Run], bool], *, done: str, refused: str
) -> HttpResponse:
    """A button on the run page. Each action is a conditional update, so two clicks (or two
    teammates) act once, and a click on a page that is out of date is harmless."""
    run = _run_or_404(run_id)
    with transaction.atomic():
        acted = action(run)
    if acted:
        messages.success(request, done)
    else:
        messages.info(request, refused)
    return redirect(run)


@csrf_exempt  # Runflow cannot send our CSRF token; the token in the URL and the HMAC guard it
@login_not_required
@require_POST
def runflow_callback(request: HttpRequest, run_id: Any, token: str) -> JsonResponse:
    """Runflow reports a finished run. Answer fast (downloads happen later, in the worker),
    200 for anything valid (also a duplicate or a late one, so Runflow stops retrying), and a
    4xx with the reason otherwise. Every delivery is recorded, whatever its fate."""
    try:
        return _receive_callback(request, run_id, token)
    except DatabaseError:
        # Busy database: a 5xx makes Runflow retry, and polling is the safety net besides.
        logger.exception("Callback for run %s could not be stored", run_id)
        response = JsonResponse({"ok": False, "reason": "busy, retry"}, status=503)
        response["Retry-After"] = "2"
        return response


def _receive_callback(request: HttpRequest, run_id: Any, token: str) -> JsonResponse:
    run = Run.objects.filter(pk=run_id).only("pk", "provider_run_id").first()
    limit = settings.SAM3WEB_CALLBACK_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    body = b"" if declared > limit else request.read(limit + 1)
    delivery = CallbackDelivery(
        run=run,
        request_id=request.headers.get("Runflow-Request-Id", "")[:200],
        signature=CallbackDelivery.Signature.NOT_CHECKED,
        body=body[:DELIVERY_BODY_KEPT].decode("utf-8", "replace"),
        body_bytes=max(declared, len(body)),
        body_truncated=len(body) > DELIVERY_BODY_KEPT or declared > limit,
        remote_addr=request.META.get("REMOTE_ADDR") or None,
    )

    def answer(status: int, outcome: str, reason: str = "") -> JsonResponse:
        delivery.http_status, delivery.outcome, delivery.reason = status, outcome, reason
        delivery.save()
        return JsonResponse(
            {"ok": status == 200, "outcome": outcome, "reason": reason}, status=status
        )

    if run is None or not callbacks.token_is_valid(run_id, token):
        # A forged token for a real run is kept in that run's log, for people to see; only
        # an excerpt of its body, as anyone who knows a run's id can send these.
        delivery.body = delivery.body[:FORGED_BODY_KEPT]
        delivery.body_truncated = delivery.body_bytes > FORGED_BODY_KEPT
        return answer(404, "rejected", "no such run, or the link's token is wrong")
    if len(body) > limit or declared > limit:
        return answer(413, "rejected", f"the body is larger than {limit} bytes")
    delivery.signature = callbacks.signature_verdict(body, request.headers.get("Runflow-Signature"))
    if delivery.signature in ("missing", "invalid"):
        return answer(401, "rejected", f"signature {delivery.signature}")
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except ValueError:  # also UnicodeDecodeError, and NaN/Infinity, which JSON does not have
        return answer(400, "rejected", "the body is not JSON")
    try:
        result = parse_callback(payload)
    except BadResult as exc:
        return answer(400, "rejected", str(exc))
    delivery.event, delivery.provider_status = result.event, result.raw_status
    if run.provider_run_id and result.run_id != run.provider_run_id:
        return answer(400, "rejected", "run_id does not match this run")
    with transaction.atomic():
        outcome = apply_result(run.pk, result, source="callback")
        return answer(200, outcome)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    """The team's runs, newest first, filtered and sorted as the form says; htmx asks for
    only the results when a filter changes."""
    form = HistoryFilter(request.GET or None)
    valid = form.is_valid() if form.is_bound else True
    sort = history.SORTS[form.sort_key]
    runs = Run.objects.select_related("owner", "image").filter(form.filters(request.user))
    cursor_error = ""
    try:
        page = history.page_of(
            runs, sort, after=request.GET.get("after", ""), before=request.GET.get("before", "")
        )
    except history.BadCursor:
        cursor_error = "That page link is out of date or broken: here is the first page."
        page = history.page_of(runs, sort)
        valid = False
    context = {
        "form": form,
        "page": page,
        "sort": form.sort_key,
        "cursor_error": cursor_error,
        "live_ids": [r.pk for r in page.runs if not r.settled],
        "query": _query_without(request, "after", "before"),
    }
    template = "segmentation/run_list.html"
    if request.htmx and request.htmx.target == "history-results":
        template += "#results"
    return render(request, template, context, status=200 if valid else 400)


def _query_without(request: HttpRequest, *names: str) -> str:
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


@require_GET
def run_list_live(request: HttpRequest) -> HttpResponse:
    """The cards of runs still in flight on a history page, swapped in place (out of band);
    polling stops once none of them can change by itself."""
    ids = request.GET.getlist("ids")[: history.PER_PAGE]
    try:
        runs = list(Run.objects.select_related("owner", "image").filter(pk__in=ids))
    except ValidationError:
        return HttpResponse("Run ids are UUIDs.", status=400, content_type="text/plain")
    live_ids = [r.pk for r in runs if not r.settled]
    response = render(
        request, "segmentation/run_list.html#live", {"runs": runs, "live_ids": live_ids}
    )
    if not live_ids:
        return HttpResponseStopPolling(response.content)
    return response


@require_http_methods(["GET", "POST"])
def run_delete(request: HttpRequest, run_id: Any) -> HttpResponse:
    """Delete a run and every file that is only its own. GET asks to confirm (so the page
    works without JavaScript); only the owner or an admin may delete."""
    run = _run_or_404(run_id)
    if not run.can_manage(request.user):
        return render(
            request,
            "segmentation/run_delete.html",
            {
                "run": run,
                "refused": "Only the person who made this run, or an admin, can delete it.",
            },
            status=403,
        )
    busy = _delete_refusal(run)
    if request.method == "POST" and not busy:
        try:
            deleted = delete_run(run.pk)
        except DatabaseError:
            logger.exception("Run %s could not be deleted", run.pk)
            busy = "The database is busy. Nothing was deleted; please try again."
        else:
            if deleted:
                messages.success(request, "The run and its files were deleted.")
            else:
                messages.info(request, "That run was already deleted.")
            return redirect("run_list")
    status = 409 if busy and request.method == "POST" else 200
    return render(
        request, "segmentation/run_delete.html", {"run": run, "busy": busy}, status=status
    )


def _delete_refusal(run: Run) -> str:
    """Why the run cannot be deleted this instant, if it cannot: a worker is writing to it."""
    if run.status == Run.Status.SUBMITTING:
        return "The run is being sent to Runflow right now. Try again in a few seconds."
    if run.artifacts in (Run.Artifacts.PENDING, Run.Artifacts.COPYING):
        return "The masks are being copied right now. Try again in a few seconds."
    return ""


@require_GET
def image_file(request: HttpRequest, image_id: int) -> FileResponse:
    """Serve a stored image to signed-in teammates. Only images we decoded ourselves are
    stored, and the content type is the one we determined, never the uploader's."""
    image = get_object_or_404(SourceImage, pk=image_id)
    return _serve(image.file, image.content_type)


@require_GET
def image_thumbnail(request: HttpRequest, image_id: int) -> FileResponse:
    image = get_object_or_404(SourceImage, pk=image_id)
    if not image.thumbnail:
        return _serve(image.file, image.content_type)
    return _serve(image.thumbnail, "image/jpeg")


@require_GET
def run_file(request: HttpRequest, run_id: Any, kind: str) -> FileResponse:
    """Our copies of what Runflow made: the overlay, the thumbnail, the preview."""
    run = _run_or_404(run_id)
    field = {"overlay": run.overlay, "thumb": run.thumbnail, "preview": run.preview}[kind]
    if not field:
        raise Http404("This run has no such file (yet).")
    content_type = {"overlay": "image/png", "thumb": "image/jpeg"}.get(kind)
    if content_type is None:
        suffix = field.name.rsplit(".", 1)[-1]
        content_type = {"jpg": "image/jpeg", "webp": "image/webp"}.get(suffix, "image/png")
    return _serve(field, content_type)


@require_GET
def mask_file(request: HttpRequest, run_id: Any, number: int) -> FileResponse:
    mask = get_object_or_404(Mask, run_id=run_id, index=number - 1)
    if not mask.file:
        raise Http404("This mask could not be copied.")
    return _serve(mask.file, "image/png")


def _serve(field: Any, content_type: str) -> FileResponse:
    try:
        f = field.open("rb")
    except FileNotFoundError:
        raise Http404("The image file is missing.") from None
    response = FileResponse(f, content_type=content_type)
    response["Cache-Control"] = "private, max-age=86400, immutable"
    response["Content-Security-Policy"] = "default-src 'none'"
    return response


def _run_context(run: Run, request: HttpRequest | None = None) -> dict[str, Any]:
    image = run.image
    scale = max(image.width, image.height)
    options = [(name, run.input.get(name)) for name in Run.OPTION_NAMES]
    font_size = max(10, round(scale / 40))
    masks = list(run.masks.all())
    deliveries = list(run.deliveries.all()[:50])
    version = hashlib.blake2s(
        f"{run.status_version}:{len(deliveries)}:{len(masks)}".encode(), digest_size=6
    ).hexdigest()
    return {
        "run": run,
        "can_manage": bool(request and run.can_manage(request.user)),
        "exports": exports.links(lambda fmt: reverse("run_export", args=[run.pk, fmt])),
        "image": image,
        "options": options,
        "masks": masks,
        "masks_missing": sum(1 for m in masks if not m.file),
        "instances": [_instance(m, font_size) for m in masks],
        "deliveries": deliveries,
        "version": version,
        "box_shapes": [
            {**b, "w": b["x_max"] - b["x_min"], "h": b["y_max"] - b["y_min"]} for b in run.boxes
        ],
        "marker_r": max(3, round(scale / 90)),
        "stroke": max(1, round(scale / 300)),
        "font_size": font_size,
        "image_area": image.width * image.height,
        "request_body_json": _pretty(run.request_body),
        "provider_response_json": _pretty(run.provider_response),
        "output_json": _pretty(run.output),
        "metadata_json": _pretty(run.metadata),
    }


def _instance(mask: Mask, font_size: int) -> dict[str, Any]:
    from .artifacts import PALETTE

    x0, y0, x1, y1 = mask.box or (0, 0, 0, 0)
    r, g, b = PALETTE[mask.index % len(PALETTE)]
    label = f"#{mask.number}" + (f" {mask.score:.2f}" if mask.score is not None else "")
    tag_h = round(font_size * 1.35)
    return {
        "mask": mask,
        "x": x0,
        "y": y0,
        "w": x1 - x0,
        "h": y1 - y0,
        "colour": f"rgb({r}, {g}, {b})",
        # A filled tag above the box (inside it when the box touches the top edge).
        "label": label,
        "tag_h": tag_h,
        "tag_w": round(len(label) * font_size * 0.62 + font_size * 0.5),
        "tag_y": y0 - tag_h if y0 >= tag_h else y0,
        "tag_pad": round(font_size * 0.25),
        "tag_baseline": round(font_size * 1.05),
    }


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) if value else ""
