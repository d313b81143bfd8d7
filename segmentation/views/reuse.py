"""Same prompts on other images: new runs from an earlier run's prompts and options."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseStopPolling

from accounts import budgets
from segmentation import batches, engines, runs
from segmentation.forms import MAX_REUSE_IMAGES, ReuseForm, SubmissionKeyField
from segmentation.models import Run
from segmentation.views._common import budget_context, options_of, pretty, prompt_drawing


@require_http_methods(["GET", "POST"])
def run_reuse(request: HttpRequest, run_id: Any) -> HttpResponse:
    """GET: the source run's prompt and a form for other images (and, after a POST, the runs
    it started). POST: one new run per image, all or none; except that when the budget runs
    out part way, the runs that fitted start and the page says the rest did not."""
    source = get_object_or_404(Run.objects.select_related("image", "owner"), pk=run_id)
    if request.method == "GET" and request.GET.get("part") == "started":
        # The "Started N runs" list, asked for again every second while some of them run.
        return _started_part(request, source)
    unavailable = engines.get().unavailable()
    form = ReuseForm(
        request.POST or None,
        request.FILES or None,
        source=source,
        initial={"submission_key": SubmissionKeyField.new()},
    )
    if request.method == "POST":
        # Like the new-run form: the images are taken in (and kept) even when runs cannot be
        # sent yet, so nothing chosen is lost once they can.
        valid = form.is_valid()
        if unavailable:
            form.add_error(None, unavailable)
        elif valid:
            started = _already_started(request, form) or _start_runs(request, form)
            if started:
                query = urlencode([("started", str(run.pk)) for run in started])
                return redirect(f"{reverse('run_reuse', args=[source.pk])}?{query}")
            # None fitted in the budget: the form says why (_start_runs added the error).
    context = {
        **_started_context(_started(request, source)),
        "source": source,
        "form": form,
        "configured": not unavailable,
        "max_images": MAX_REUSE_IMAGES,
        "price": settings.SAM3WEB_PRICE_PER_IMAGE,
        **budget_context(request.user),
        "options": options_of(source),
        "metadata_json": pretty(source.metadata),
        **prompt_drawing(source),
    }
    return render(
        request, "segmentation/run_reuse.html", context, status=400 if form.is_bound else 200
    )


def _already_started(request: HttpRequest, form: ReuseForm) -> list[Run]:
    """The runs this very form made, when it is posted again (Back and Submit, a double
    click): the second answer shows them instead of starting them twice."""
    key = form.cleaned_data["submission_key"]
    if not key or not request.user.is_authenticated:
        return []
    earlier = list(
        Run.objects.filter(owner=request.user, submission_key__startswith=f"{key}:").order_by(
            "created_at", "id"
        )
    )
    if earlier:
        messages.info(request, "This form was already submitted: here are the runs it started.")
    return earlier


def _start_runs(request: HttpRequest, form: ReuseForm) -> list[Run]:
    """Start a run per image: the runs that were started (none: the form has the error).

    One transaction for every run and its queued submit: all of them start, or none (a
    failure rolls them all back). Only the budget running out part way is different: each run
    is charged as it is made, so the ones before it fitted, and they start; the rest are not
    made, and the page says so (budgets.reserve keeps its locks until the commit, so no other
    request can take the budget between the check and the runs). Each run's key is the form's
    key and its place, so a second POST of the form finds them."""
    key = form.cleaned_data["submission_key"]
    started: list[Run] = []
    refused = ""
    try:
        with transaction.atomic():
            for place, taken in enumerate(form.taken):
                try:
                    started.append(
                        runs.create_run(
                            owner=request.user,
                            image=taken.image,
                            input=taken.input,
                            metadata=form.source.metadata,
                            source_url=taken.source_url,
                            parent=form.source,
                            submission_key=f"{key}:{place}" if key else "",
                        )
                    )
                except budgets.BudgetExceeded as exc:
                    # create_run rolled its own savepoint back: nothing of this run is left.
                    refused = str(exc)
                    break
    except runs.AlreadySubmitted:
        # The same form posted twice at once: the other request started them.
        return _already_started(request, form)
    count, total = len(started), len(form.taken)
    if not started:
        form.add_error(None, f"Nothing was started. {refused}")
        return []
    names = [taken.name for taken in form.taken[:count]]
    batch = batches.record_reuse(form.source, started, names, owner=request.user)
    if refused:
        messages.warning(
            request,
            f"Started {count} of {total} runs; the other {total - count} "
            f"{'was' if total - count == 1 else 'were'} not started, because the budget is "
            f"spent. {refused}",
        )
    else:
        messages.success(
            request,
            format_html(
                "Started {} run{} with the prompt and options of this run: follow, review and "
                'export them together as <a href="{}">a batch</a>.',
                count,
                "s" if count != 1 else "",
                batch.get_absolute_url(),
            ),
        )
    for note in form.notes():
        messages.info(request, note)
    return started


def _started_context(started: list[Run]) -> dict[str, Any]:
    return {
        "started": started,
        "started_live": any(not run.settled for run in started),
        "started_query": urlencode([("started", str(run.pk)) for run in started]),
    }


def _started_part(request: HttpRequest, source: Run) -> HttpResponse:
    context = {"source": source, **_started_context(_started(request, source))}
    response = render(request, "segmentation/run_reuse.html#started", context)
    if not context["started_live"]:
        return HttpResponseStopPolling(response.content)
    return response


def _started(request: HttpRequest, source: Run) -> list[Run]:
    """The runs named in ?started=, made from this run: the summary after a POST."""
    ids = []
    for value in request.GET.getlist("started")[:MAX_REUSE_IMAGES]:
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
