"""Same prompts on other images: new runs from an earlier run's prompts and options."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from .models import Run
from .reuse_forms import MAX_IMAGES, OPTION_NAMES, ReuseForm
from .tasks import enqueue_submit


@require_http_methods(["GET", "POST"])
def run_reuse(request: HttpRequest, run_id: Any) -> HttpResponse:
    """GET: the source run's prompt and a form for other images (and, after a POST, the runs
    it started). POST: one new run per image, all or none."""
    source = get_object_or_404(Run.objects.select_related("image", "owner"), pk=run_id)
    configured = bool(settings.RUNFLOW_API_KEY)
    form = ReuseForm(request.POST or None, request.FILES or None, source=source, user=request.user)
    if request.method == "POST":
        if not configured:
            # Like the new-run form: the images are still taken in (and kept), so nothing
            # chosen is lost once a key is set.
            form.is_valid()
            form.add_error(None, "Runs cannot be submitted: no Runflow API key is configured.")
        elif form.is_valid():
            runs = _start_runs(request, form)
            query = urlencode([("started", str(run.pk)) for run in runs])
            return redirect(f"{reverse('run_reuse', args=[source.pk])}?{query}")
    context = {
        "source": source,
        "form": form,
        "configured": configured,
        "max_images": MAX_IMAGES,
        "price": settings.SAM3WEB_PRICE_PER_IMAGE,
        "started": _started(request, source),
        **_drawing(source),
    }
    return render(
        request, "segmentation/run_reuse.html", context, status=400 if form.is_bound else 200
    )


def _start_runs(request: HttpRequest, form: ReuseForm) -> list[Run]:
    # One transaction for every run and its queued submit: all of them start, or none.
    with transaction.atomic():
        runs = []
        for taken in form.taken:
            run_form = taken.run_form
            assert run_form is not None  # a valid ReuseForm built one per image
            run = run_form.save(request.user, parent=form.source)
            enqueue_submit(run)
            runs.append(run)
    count = len(runs)
    messages.success(
        request,
        f"Started {count} run{'s' if count != 1 else ''} with the prompt and options of this run.",
    )
    for note in form.notes():
        messages.info(request, note)
    return runs


def _started(request: HttpRequest, source: Run) -> list[Run]:
    """The runs named in ?started=, made from this run: the summary after a POST."""
    ids = []
    for value in request.GET.getlist("started")[:MAX_IMAGES]:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue  # a mangled link shows fewer runs, never an error
    if not ids:
        return []
    return list(
        Run.objects.filter(pk__in=ids, parent=source)
        .select_related("image")
        .order_by("created_at", "id")
    )


def _drawing(source: Run) -> dict[str, Any]:
    """Sizes for drawing the source run's points and boxes over its image, as the run page."""
    image = source.image
    scale = max(image.width, image.height)
    return {
        "options": [(name, source.input.get(name)) for name in OPTION_NAMES],
        "box_shapes": [
            {**b, "w": b["x_max"] - b["x_min"], "h": b["y_max"] - b["y_min"]} for b in source.boxes
        ],
        "marker_r": max(3, round(scale / 90)),
        "stroke": max(1, round(scale / 300)),
        "metadata_json": json.dumps(source.metadata, indent=2, ensure_ascii=False)
        if source.metadata
        else "",
    }
