"""Batches' pages: the new-batch form (its upload streamed to disk, within a limit), the batch
page (intake with its progress, the preview and its cost, Start, then the runs' progress live,
Cancel and Retry failed), and the list of batches. The work is ``segmentation.batches``'."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, QueryDict, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from accounts import budgets
from segmentation import batches, engines, schema
from segmentation.batch_forms import BatchForm, initial_from
from segmentation.imaging.decode import size_text
from segmentation.imaging.uploads import LimitedDiskUploadHandler
from segmentation.models import Batch, BatchItem, BatchRun, Run, charge
from segmentation.usage import money
from segmentation.views._common import budget_context

# The preview shows this many accepted images as thumbnails, and this many refused ones and
# duplicates by name: a ZIP of junk may make thousands.
THUMBS_SHOWN = 60
ITEMS_SHOWN = 200
RUNS_PER_PAGE = 100
BATCHES_PER_PAGE = 25
EXPORTS = [
    ("coco.json", "COCO JSON"),
    ("coco.zip", "COCO ZIP"),
    ("yolo.zip", "YOLO ZIP"),
    ("masks.zip", "Mask PNGs (ZIP)"),
]
TEXT_FIELDS = ("concepts", "name", "image_urls", "max_masks", "output_format")
TICKS = (*(option.name for option in schema.OPTIONS if option.kind is bool), "run_again")
FINISHED = (Run.Status.SUCCEEDED, Run.Status.CANCELED, *batches.FAILED)


# --- the new-batch form ---------------------------------------------------------------------


@csrf_exempt
@require_http_methods(["GET", "POST"])
def batch_new(request: HttpRequest) -> HttpResponse:
    """The upload goes to disk, file by file, and stops past SAM3WEB_BATCH_MAX_UPLOAD_BYTES:
    the handlers must be in place before anything reads the body, CSRF's check included, so
    that check is made after them (by _batch_new)."""
    if request.method == "POST":
        request.upload_handlers = [
            LimitedDiskUploadHandler(
                request, max_total_bytes=settings.SAM3WEB_BATCH_MAX_UPLOAD_BYTES
            )
        ]
        try:
            request.POST.get("concepts")  # reads the body now: what goes wrong is told below
        except (
            RequestDataTooBig,
            TooManyFieldsSent,
            TooManyFilesSent,
            MultiPartParserError,
        ) as exc:
            # Nothing is made or changed, so showing the form again needs no CSRF check.
            status = 413 if isinstance(exc, RequestDataTooBig) else 400
            return _new_page(request, BatchForm(), refusal=_unreadable(exc), status=status)
        except UnreadablePostError:
            return HttpResponse("The upload was broken off.", status=400, content_type="text/plain")
    return _batch_new(request)


@csrf_protect
def _batch_new(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _new_page(request, BatchForm(initial=_initial(request.GET.get("from", ""))))
    refused = getattr(request, "upload_refused", "")
    if refused:
        # What was read before the limit is kept; the files are not (they are the problem).
        return _new_page(
            request, BatchForm(initial=_kept(request.POST)), refusal=refused, status=413
        )
    form = BatchForm(request.POST, request.FILES)
    if not form.is_valid():
        return _new_page(request, form, status=400)
    data = form.cleaned_data
    batch = batches.create_batch(
        owner=request.user,
        concepts=data["concepts"],
        options=form.options,
        files=data["images"],
        archive=data["archive"],
        urls=data["image_urls"],
        run_again=data["run_again"],
        name=data["name"].strip(),
    )
    return redirect(batch)


def _new_page(
    request: HttpRequest, form: BatchForm, *, refusal: str = "", status: int = 200
) -> HttpResponse:
    """The form; ``refusal`` says why an upload could not be read (the form is then unbound,
    holding what could be read as its initial values)."""
    unavailable = engines.get().unavailable()
    limit = int(settings.SAM3WEB_BATCH_MAX_UPLOAD_BYTES)
    return render(
        request,
        "segmentation/batches/batch_new.html",
        {
            "form": form,
            "refusal": refusal,
            "opened": form.open_sections(),
            "configured": not unavailable,
            "max_images": settings.SAM3WEB_BATCH_MAX_IMAGES,
            "max_upload_bytes": limit,
            "max_upload": size_text(limit),
            "price": money(settings.SAM3WEB_PRICE_PER_IMAGE),
            **budget_context(request.user),
        },
        status=status,
    )


def _initial(batch_id: str) -> dict[str, Any]:
    """An earlier batch's concepts and options (?from=<id>): its form, kept."""
    if not batch_id.isdigit() or len(batch_id) > 18:
        return {}
    earlier = Batch.objects.filter(pk=int(batch_id)).first()
    return initial_from(earlier) if earlier is not None else {}


def _kept(data: QueryDict) -> dict[str, Any]:
    """The fields of a refused upload as initial values (an unbound form: no other errors).
    Ticks count only when the body was read past them (the concepts come before the files)."""
    kept: dict[str, Any] = {name: data[name] for name in TEXT_FIELDS if data.get(name)}
    if "concepts" in data:
        kept.update({name: name in data for name in TICKS})
    return kept


def _unreadable(exc: Exception) -> str:
    limit = settings.SAM3WEB_BATCH_MAX_IMAGES
    if isinstance(exc, TooManyFilesSent):
        return (
            f"Too many files: a batch takes at most {limit:,} images. Put them in a ZIP, or "
            "split them into several batches."
        )
    if isinstance(exc, TooManyFieldsSent):
        return "The form had far more fields than it has: nothing was made."
    if isinstance(exc, RequestDataTooBig):
        return (
            f"The text fields are larger than {size_text(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)} "
            f"in all: a batch takes at most {limit:,} URLs and {batches.MAX_CONCEPTS} concepts."
        )
    return "The upload arrived incomplete or malformed: please choose the files and send it again."


# --- the batch page -------------------------------------------------------------------------


def _batch_or_404(batch_id: int) -> Batch:
    return get_object_or_404(Batch.objects.select_related("owner"), pk=batch_id)


@require_GET
def batch_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = _batch_or_404(batch_id)
    context = _context(request, batch)
    if batch.started_at is not None:
        context.update(_items(batch))  # the images taken in, folded under the runs
    context["options"] = [(name, batch.options.get(name)) for name in schema.OPTION_NAMES]
    return render(request, "segmentation/batches/batch_detail.html", context)


@require_GET
def batch_progress(request: HttpRequest, batch_id: int) -> HttpResponse:
    """The live part of the batch page, asked for every second until nothing on it will
    change by itself; 204 while nothing has."""
    batch = _batch_or_404(batch_id)
    context = _context(request, batch)
    if request.GET.get("v") == context["version"] and context["live"]:
        return HttpResponse(status=204)
    response = render(request, "segmentation/batches/batch_detail.html#live", context)
    if not context["live"]:
        return HttpResponseStopPolling(response.content)
    return response


def _context(request: HttpRequest, batch: Batch) -> dict[str, Any]:
    """What the page's live part shows, for the batch's state: intake's progress; the preview
    and its cost; or the runs' progress and the runs."""
    unavailable = engines.get().unavailable()
    context: dict[str, Any] = {
        "batch": batch,
        "can_manage": batch.can_manage(request.user),
        "owner_name": batch.owner.get_username() if batch.owner else "a former teammate",
        "configured": not unavailable,
        "exports": EXPORTS,
        "page_number": _page_number(request),
    }
    key: list[Any] = [batch.state, batch.intake_done, batch.intake_total, batch.message]
    live = False
    if batch.state == Batch.State.INTAKE:
        live = True
        context["intake_percent"] = (
            round(100 * batch.intake_done / batch.intake_total) if batch.intake_total else 0
        )
    elif batch.started_at is None:
        if batch.state == Batch.State.READY:
            context["preview"] = ahead = batches.preview(batch)
            context["cost_text"] = money(ahead.cost)
            context["left_text"] = "" if ahead.left is None else money(ahead.left)
            context["price"] = money(settings.SAM3WEB_PRICE_PER_IMAGE)
            context["unavailable"] = unavailable
        context.update(_items(batch))
    else:
        shown = batches.progress(batch)
        context["progress"] = shown
        context["cost_text"] = money(shown.cost)
        context["eta_text"] = _eta(shown.eta_seconds)
        context["bar"] = _bar(shown)
        page = Paginator(_cells(batch), RUNS_PER_PAGE).get_page(context["page_number"])
        context["runs_page"] = page
        context["cells"] = list(page.object_list)
        live = _will_change(batch, shown)
        key += [
            shown.done,
            shown.failed,
            shown.canceled,
            shown.at_engine,
            shown.waiting,
            str(shown.cost),
            context["eta_text"],  # in words: it changes less often than the seconds
            page.number,
            [(c.pk, c.run_id, c.run.status if c.run else "") for c in context["cells"]],
        ]
    context["live"] = live
    context["version"] = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    return context


def _page_number(request: HttpRequest) -> int:
    text = request.GET.get("page", "")
    return int(text) if text.isdigit() and len(text) < 9 else 1


def _will_change(batch: Batch, shown: batches.Progress) -> bool:
    """Whether the runs' progress can still move without anyone acting."""
    if shown.at_engine:
        return True  # canceled or not, what is at Runflow finishes
    if batch.state != Batch.State.RUNNING or shown.complete:
        return False
    if batch.message:
        # Making runs stopped (the budget is spent): only what was made may still go.
        return Run.objects.filter(batch=batch, status=Run.Status.WAITING).exists()
    return True


def _cells(batch: Batch) -> QuerySet[BatchRun]:
    """The batch's runs for the table, each with its item and run in the same query."""
    return (
        batch.cells.select_related("item", "run")
        .only(
            "id",
            "concept",
            "reused",
            "run_id",
            "item__id",
            "item__name",
            "item__position",
            "item__image_id",
            "run__id",
            "run__status",
            "run__engine",
            "run__mask_count",
            "run__batch_id",
        )
        .order_by("item__position", "id")
    )


def _items(batch: Batch) -> dict[str, Any]:
    """What intake made of the images: accepted (the first few as thumbnails), duplicates
    (naming the first) and refused, with the reason for each."""
    counts = dict(
        batch.items.order_by()
        .values_list("state")
        .annotate(n=Count("pk"))
        .values_list("state", "n")
    )
    by_state = batch.items.order_by("position")
    accepted = list(batches.accepted_items(batch).only("id", "name", "image_id")[:THUMBS_SHOWN])
    duplicates = list(
        by_state.filter(state=BatchItem.State.DUPLICATE).select_related("duplicate_of")[
            :ITEMS_SHOWN
        ]
    )
    refused = list(by_state.filter(state=BatchItem.State.REFUSED)[:ITEMS_SHOWN])
    accepted_count = counts.get(BatchItem.State.ACCEPTED, 0)
    duplicate_count = counts.get(BatchItem.State.DUPLICATE, 0)
    refused_count = counts.get(BatchItem.State.REFUSED, 0)
    return {
        "accepted": accepted,
        "accepted_count": accepted_count,
        "accepted_more": accepted_count - len(accepted),
        "duplicates": duplicates,
        "duplicate_count": duplicate_count,
        "duplicates_more": duplicate_count - len(duplicates),
        "refused": refused,
        "refused_count": refused_count,
        "refused_more": refused_count - len(refused),
    }


def _bar(shown: batches.Progress) -> list[dict[str, Any]]:
    """The progress bar's parts, in the order they fill it."""
    parts = [
        ("done", "done", shown.done),
        ("failed", "failed", shown.failed),
        ("canceled", "canceled", shown.canceled),
        ("engine", "at Runflow", shown.at_engine),
        ("waiting", "waiting", shown.waiting),
    ]
    total = shown.total or 1
    return [
        {"key": key, "label": label, "count": n, "percent": f"{100 * n / total:.3f}"}
        for key, label, n in parts
        if n or key != "canceled"
    ]


def _eta(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(seconds, 1)} s left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60} min left"


# --- start, cancel, retry ---------------------------------------------------------------------


def _refused(request: HttpRequest, batch: Batch, action: str) -> HttpResponse:
    owner = batch.owner.get_username() if batch.owner else "its owner"
    return render(
        request,
        "segmentation/batches/batch_refused.html",
        {
            "batch": batch,
            "refused": f"Only {owner}, who made this batch, or an admin can {action} it.",
        },
        status=403,
    )


@require_POST
def batch_start(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = _batch_or_404(batch_id)
    if not batch.can_manage(request.user):
        return _refused(request, batch, "start")
    unavailable = engines.get().unavailable()
    if unavailable:
        messages.error(request, f"Not started. {unavailable}")
        return redirect(batch)
    try:
        started = batches.start(batch)
    except (budgets.BudgetExceeded, batches.BatchError) as exc:
        messages.error(request, f"Not started. {exc}")
    else:
        if started:
            messages.success(request, "Started: its runs are being made and sent to Runflow.")
        else:
            messages.info(request, "This batch was already started: nothing was sent twice.")
    return redirect(batch)


@require_POST
def batch_cancel(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = _batch_or_404(batch_id)
    if not batch.can_manage(request.user):
        return _refused(request, batch, "cancel")
    was = batch.state
    canceled = batches.cancel(batch)
    if canceled is None:
        messages.info(request, "This batch was already canceled.")
    elif was == Batch.State.INTAKE:
        messages.success(request, "Canceled: the images not taken in yet were left out.")
    elif was == Batch.State.READY:
        messages.success(request, "Canceled: nothing was sent.")
    else:
        at_engine = batch.made_runs.filter(status__in=batches.IN_FLIGHT).count()
        text = f"Canceled: {canceled:,} run{'s' if canceled != 1 else ''} not sent yet will not be."
        if at_engine:
            one = at_engine == 1
            text += (
                f" {at_engine:,} already at Runflow finish{'es' if one else ''}, "
                f"and {'is' if one else 'are'} billed."
            )
        messages.success(request, text)
    return redirect(batch)


@require_POST
def batch_retry(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = _batch_or_404(batch_id)
    if not batch.can_manage(request.user):
        return _refused(request, batch, "retry")
    if batch.started_at is None:
        # Nothing of it was ever sent: retrying would start it without its preview.
        messages.info(request, "This batch was never started: there is nothing to retry.")
        return redirect(batch)
    unavailable = engines.get().unavailable()
    if unavailable:
        messages.error(request, f"Nothing was sent again. {unavailable}")
        return redirect(batch)
    try:
        count = batches.retry_failed(batch)
    except (budgets.BudgetExceeded, batches.BatchError) as exc:
        messages.error(request, f"Nothing was sent again. {exc}")
    else:
        if count:
            messages.success(
                request, f"Sending {count:,} run{'s' if count != 1 else ''} again, as new runs."
            )
        else:
            messages.info(request, "No run of this batch failed: there is nothing to retry.")
    return redirect(batch)


# --- the list -------------------------------------------------------------------------------


def _count(queryset: QuerySet[Any]) -> Coalesce:
    """A count per batch as a subquery (joins would multiply each other's rows)."""
    counted = queryset.order_by().values("batch").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


@require_GET
def batch_list(request: HttpRequest) -> HttpResponse:
    """Every batch of the team, newest first: who, when, images × concepts, progress, cost."""
    cells = BatchRun.objects.filter(batch=OuterRef("pk"))
    spent = (
        Run.objects.filter(batch=OuterRef("pk"))
        .order_by()
        .values("batch")
        .annotate(total=Sum(charge()))
        .values("total")
    )
    rows = Batch.objects.select_related("owner").annotate(
        images=_count(
            BatchItem.objects.filter(batch=OuterRef("pk"), state=BatchItem.State.ACCEPTED)
        ),
        done=_count(cells.filter(run__status=Run.Status.SUCCEEDED)),
        finished=_count(cells.filter(run__status__in=FINISHED)),
        failed=_count(cells.filter(run__status__in=batches.FAILED)),
        spent=Subquery(spent),
    )
    page = Paginator(rows.order_by("-created_at", "-id"), BATCHES_PER_PAGE).get_page(
        _page_number(request)
    )
    shown = []
    for annotated in page.object_list:
        batch: Any = annotated  # with the counts above
        total = batch.images * len(batch.concepts)
        shown.append(
            {
                "batch": batch,
                "total": total,
                "percent": round(100 * batch.finished / total) if total else 0,
                "cost": money(Decimal(batch.spent or 0)),
            }
        )
    return render(request, "segmentation/batches/batch_list.html", {"page": page, "rows": shown})
