from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from .forms import RunForm
from .models import Run, SourceImage
from .tasks import enqueue_submit

RUNS_PER_PAGE = 25


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
        form = _form_from_run(request, request.GET["from"]) or form
    if request.method == "POST":
        if not configured:
            form.is_valid()
            form.add_error(None, "Runs cannot be submitted: no Runflow API key is configured.")
        elif form.is_valid():
            with transaction.atomic():
                run = Run.objects.create(
                    owner=request.user,
                    image=form.source_image,
                    source_url=form.cleaned_data["source_url"],
                    input=form.run_input(),
                    metadata=form.cleaned_data["metadata"],
                )
                enqueue_submit(run)
            return redirect(run)
    status = 400 if form.is_bound else 200
    return render(
        request,
        "segmentation/run_new.html",
        {"form": form, "configured": configured},
        status=status,
    )


def _form_from_run(request: HttpRequest, run_id: str) -> RunForm | None:
    """The form filled in as an earlier run was: same image, prompts and options."""
    try:
        run = Run.objects.select_related("image").filter(pk=run_id).first()
    except ValidationError:  # not a UUID: ignore it, show an empty form
        return None
    if run is None:
        return None
    form = RunForm(initial={**run.input, "metadata": run.metadata}, user=request.user)
    form.source_image = run.image
    form.source_url = run.source_url
    return form


def _run_or_404(run_id: Any) -> Run:
    return get_object_or_404(Run.objects.select_related("image", "owner"), pk=run_id)


@require_GET
def run_detail(request: HttpRequest, run_id: Any) -> HttpResponse:
    run = _run_or_404(run_id)
    return render(request, "segmentation/run_detail.html", _run_context(run))


@require_GET
def run_status(request: HttpRequest, run_id: Any) -> HttpResponse:
    """The status fragment the run page polls; polling stops once nothing will change."""
    run = _run_or_404(run_id)
    if request.GET.get("v") == run.status_version and not run.is_final:
        # Nothing new: htmx leaves the page as it is (an opened <details> stays open).
        return HttpResponse(status=204)
    response = render(request, "segmentation/run_detail.html#status", _run_context(run))
    if run.is_final:
        return HttpResponseStopPolling(response.content)
    return response


@require_POST
def run_resubmit(request: HttpRequest, run_id: Any) -> HttpResponse:
    run = _run_or_404(run_id)
    with transaction.atomic():
        # Conditional update: two clicks (or two people) queue the run once.
        updated = Run.objects.filter(pk=run.pk, status=Run.Status.NOT_SUBMITTED).update(
            status=Run.Status.PENDING, updated_at=timezone.now()
        )
        if updated:
            enqueue_submit(run)
    if updated:
        messages.success(request, "Submitting the run again.")
    else:
        messages.info(request, "This run is not waiting to be submitted again.")
    return redirect(run)


@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    runs = Run.objects.select_related("owner", "image").order_by("-created_at")
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "segmentation/run_list.html", {"page": page})


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


def _serve(field: Any, content_type: str) -> FileResponse:
    try:
        f = field.open("rb")
    except FileNotFoundError:
        raise Http404("The image file is missing.") from None
    response = FileResponse(f, content_type=content_type)
    response["Cache-Control"] = "private, max-age=86400, immutable"
    response["Content-Security-Policy"] = "default-src 'none'"
    return response


def _run_context(run: Run) -> dict[str, Any]:
    image = run.image
    scale = max(image.width, image.height)
    options = [
        (name, run.input.get(name))
        for name in (
            "apply_mask",
            "return_multiple_masks",
            "max_masks",
            "include_scores",
            "include_boxes",
            "sync_mode",
            "output_format",
        )
    ]
    return {
        "run": run,
        "image": image,
        "options": options,
        "box_shapes": [
            {**b, "w": b["x_max"] - b["x_min"], "h": b["y_max"] - b["y_min"]} for b in run.boxes
        ],
        "marker_r": max(3, round(scale / 90)),
        "stroke": max(1, round(scale / 300)),
        "font_size": max(10, round(scale / 40)),
        "request_body_json": (
            json.dumps(run.request_body, indent=2, ensure_ascii=False) if run.request_body else ""
        ),
        "provider_response_json": (
            json.dumps(run.provider_response, indent=2, ensure_ascii=False)
            if run.provider_response
            else ""
        ),
        "metadata_json": (
            json.dumps(run.metadata, indent=2, ensure_ascii=False) if run.metadata else ""
        ),
    }
