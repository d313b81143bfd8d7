"""The team's history: every run as a card, filtered, sorted and paged (see
``segmentation.history``), with the cards of runs in flight updated in place."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseStopPolling

from segmentation import history
from segmentation.history import HistoryFilter
from segmentation.models import Run
from segmentation.views._common import HtmxHttpRequest


@require_GET
def run_list(request: HtmxHttpRequest) -> HttpResponse:
    """The team's runs, newest first, filtered and sorted as the form says; htmx asks for
    only the results when a filter changes."""
    form = HistoryFilter(request.GET or None)
    valid = form.is_valid() if form.is_bound else True
    sort = history.SORTS[form.sort_key]
    runs = Run.objects.select_related("owner", "image", "token").filter(form.filters(request.user))
    cursor_error = ""
    try:
        page = history.page_of(
            runs, sort, after=request.GET.get("after", ""), before=request.GET.get("before", "")
        )
    except history.BadCursor:
        cursor_error = "That page link is out of date or broken: here is the first page."
        page = history.page_of(runs, sort)
        valid = False
    query = request.GET.copy()
    for name in ("after", "before"):
        query.pop(name, None)
    without_batch = query.copy()
    without_batch.pop("batch", None)
    context = {
        "form": form,
        "page": page,
        "sort": form.sort_key,
        "cursor_error": cursor_error,
        "live_ids": [r.pk for r in page.runs if not r.settled],
        "query": query.urlencode(),
        "query_without_batch": without_batch.urlencode(),
    }
    template = "segmentation/run_list.html"
    if request.htmx and request.htmx.target == "history-results":
        template += "#results"
    return render(request, template, context, status=200 if valid else 400)


@require_GET
def run_list_live(request: HttpRequest) -> HttpResponse:
    """The cards of runs still in flight on a history page, swapped in place (out of band);
    polling stops once none of them can change by itself."""
    ids = request.GET.getlist("ids")[: history.PER_PAGE]
    try:
        runs = list(Run.objects.select_related("owner", "image", "token").filter(pk__in=ids))
    except ValidationError:
        return HttpResponse("Run ids are UUIDs.", status=400, content_type="text/plain")
    live_ids = [r.pk for r in runs if not r.settled]
    response = render(
        request, "segmentation/run_list.html#live", {"runs": runs, "live_ids": live_ids}
    )
    if not live_ids:
        return HttpResponseStopPolling(response.content)
    return response
