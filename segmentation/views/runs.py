"""A run's life in the browser: the new-run form, the run page and its live part, the buttons
on it (submit again, check again, retry copying) and deleting."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from accounts import budgets
from segmentation import engines, live, runs
from segmentation.forms import RunForm, SubmissionKeyField
from segmentation.imaging.uploads import upload_refused
from segmentation.models import Run
from segmentation.views._common import budget_context, run_context, run_or_404

logger = logging.getLogger(__name__)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("run_new")


@require_http_methods(["GET", "POST"])
def run_new(request: HttpRequest) -> HttpResponse:
    unavailable = engines.get().unavailable()
    form = RunForm(
        request.POST or None,
        request.FILES or None,
        initial={"submission_key": SubmissionKeyField.new()},
    )
    if request.method == "GET" and request.GET.get("from"):
        keep_prompts = request.GET.get("keep") != "image"
        form = _form_from_run(request.GET["from"], keep_prompts=keep_prompts) or form
    if request.method == "POST":
        # The image is taken in (and kept) even when runs cannot be sent yet, so nothing
        # chosen is lost once they can.
        valid = form.is_valid()
        if refused := upload_refused(request):  # the temporary disk is full
            form.errors.pop("image", None)
            form.add_error("image", refused)
            valid = False
        if unavailable:
            form.add_error(None, unavailable)
        elif valid:
            assert form.source_image is not None  # a valid form took one in
            try:
                run = runs.create_run(
                    owner=request.user,
                    image=form.source_image,
                    input=form.input,
                    metadata=form.cleaned_data["metadata"],
                    source_url=form.source_url,
                    parent=form.cleaned_data["parent"],
                    submission_key=form.cleaned_data["submission_key"],
                )
            except runs.AlreadySubmitted as done:
                messages.info(request, "This form was already submitted: here is the run it made.")
                return redirect(done.run)
            except budgets.BudgetExceeded as refused:
                # Nothing was made; the image stays chosen (staged) for when there is budget.
                form.add_error(None, str(refused))
            else:
                return redirect(run)
    status = 400 if form.is_bound else 200
    return render(
        request,
        "segmentation/run_new.html",
        {"form": form, "configured": not unavailable, **budget_context(request.user)},
        status=status,
    )


def _form_from_run(run_id: str, *, keep_prompts: bool = True) -> RunForm | None:
    """The form filled in as an earlier run was: same image and options, and its prompts too
    unless the person asked for the same image with a new prompt."""
    try:
        run = Run.objects.select_related("image").filter(pk=run_id).first()
    except ValidationError:  # not a UUID: ignore it, show an empty form
        return None
    if run is None:
        return None
    initial = {
        **run.input,
        "metadata": run.metadata,
        "parent": run.pk,
        "submission_key": SubmissionKeyField.new(),
    }
    if not keep_prompts:
        for name in ("prompt", "point_prompts", "box_prompts", "parent"):
            initial.pop(name, None)
    form = RunForm(initial=initial)
    form.source_image = run.image
    form.source_url = run.source_url
    return form


@require_GET
def run_detail(request: HttpRequest, run_id: Any) -> HttpResponse:
    run = run_or_404(run_id)
    return render(request, "segmentation/run_detail.html", run_context(run, request))


@require_GET
def run_status(request: HttpRequest, run_id: Any) -> HttpResponse:
    """The live part of the run page, asked for until nothing on it will change by itself.
    With ``wait=1`` the request waits for a change first (a long poll, see segmentation.live)."""
    run = run_or_404(run_id)
    seen = request.GET.get("v", "")
    waits = request.GET.get("wait") == "1" and seen and not run.settled
    if waits and live.wait_for_change(run.pk, seen):
        run = run_or_404(run_id)
    context = run_context(run, request)
    if seen == context["version"] and not run.settled:
        # Nothing new: htmx leaves the page as it is (an opened <details> stays open).
        return HttpResponse(status=204)
    response = render(request, "segmentation/run_detail.html#live", context)
    if run.settled:
        return HttpResponseStopPolling(response.content)
    return response


@require_POST
def run_resubmit(request: HttpRequest, run_id: Any) -> HttpResponse:
    run = run_or_404(run_id)
    try:
        if run.status == Run.Status.STALE:
            # Its engine will never give this run's result: send it again as a new run.
            try:
                again = runs.send_as_new(run, owner=request.user)
            except runs.AlreadySubmitted as done:
                messages.info(request, "This run was already sent again: here is the new run.")
                return redirect(done.run)
            messages.success(request, "Sent again as a new run, with the same image and prompts.")
            return redirect(again)
        return _act(
            request,
            run,
            runs.resubmit,
            done="Submitting the run again.",
            refused="This run is not waiting to be submitted again.",
        )
    except budgets.BudgetExceeded as refused:
        # A run sent again is charged again (a refused one was not): nothing was sent.
        if run.owner_id in (None, request.user.pk) or run.status == Run.Status.STALE:
            # Charged to whoever clicked (a new run is theirs): the refusal speaks to them.
            messages.error(request, f"Not submitted again. {refused}")
        else:
            # An admin's click on a teammate's run: it stays the teammate's, so does the charge.
            name = run.owner.get_username() if run.owner else "its owner"
            messages.error(
                request,
                f"Not submitted again: it is charged to {name}, and {name}’s monthly budget "
                "(or the team’s) is spent.",
            )
        return redirect(run)


@require_POST
def run_check_again(request: HttpRequest, run_id: Any) -> HttpResponse:
    return _act(
        request,
        run_or_404(run_id),
        runs.check_again,
        done="Asking {engine} about this run again.",
        refused="This run is not waiting for a result.",
    )


@require_POST
def run_retry_copy(request: HttpRequest, run_id: Any) -> HttpResponse:
    return _act(
        request,
        run_or_404(run_id),
        runs.retry_copy,
        done="Copying the missing masks again.",
        refused="Nothing is missing from this run.",
    )


def _act(
    request: HttpRequest, run: Run, action: Callable[[Run], bool], *, done: str, refused: str
) -> HttpResponse:
    """A button on the run page: a message either way ("{engine}" in it names the run's
    engine), then back to the run."""
    if action(run):
        messages.success(request, done.format(engine=engines.for_run(run).label))
    else:
        messages.info(request, refused)
    return redirect(run)


@require_http_methods(["GET", "POST"])
def run_delete(request: HttpRequest, run_id: Any) -> HttpResponse:
    """Delete a run and every file that is only its own. GET asks to confirm (so the page
    works without JavaScript); only the owner or an admin may delete."""
    run = run_or_404(run_id)
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
    busy = runs.busy(run)
    if request.method == "POST" and not busy:
        try:
            deleted = runs.delete_run(run.pk)
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
