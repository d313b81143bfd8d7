"""Batches: a few concepts over many images, one ordinary run per image × concept.

The life of a batch:

1. ``create_batch`` keeps what the person gave (files staged in storage, the ZIP, the URLs) and
   queues ``intake_batch``, which takes every image in (the run form's intake: sniffing, limits,
   EXIF, SSRF-safe fetching), one item at a time with visible progress. Nothing is sent yet.
2. The batch page previews it: what was accepted, what was refused and why, and the cost.
3. ``start`` (once, however often it is pressed) queues ``start_batch``, which makes one
   BatchRun per accepted image × concept: a run the team already has for the same image,
   concept and options is reused (never paid twice); the rest are made by
   ``runs.create_run`` as WAITING runs, charged to the owner's budget like any run.
4. ``dispatch`` releases WAITING runs to the engine, at most SAM3WEB_BATCH_CONCURRENCY batch
   runs at the engine at once across all batches, oldest batch first; a run leaving the engine
   frees its slot. A 429 puts the run back to wait and pauses all dispatch for its
   Retry-After. Submits themselves are the ordinary submit task (lease + idempotency key: one
   provider run per local run, whatever dies when), queued at a lower priority than the form's.
5. ``cancel`` stops what has not been sent; ``retry_failed`` sends the failed ones again."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.files.base import File
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum
from django.dispatch import receiver
from django.tasks import task
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from accounts import budgets
from segmentation import runs, schema, tasks
from segmentation.imaging import archive as archives
from segmentation.imaging.decode import ImageRejected
from segmentation.imaging.intake import IntakeResult, intake_bytes, intake_upload, intake_url
from segmentation.imaging.store import store_image
from segmentation.locks import held
from segmentation.models import Batch, BatchItem, BatchRun, Dispatch, Run, charge
from segmentation.signals import run_changed, worker_starting

logger = logging.getLogger(__name__)

MAX_CONCEPTS = 20
MAX_CONCEPT_CHARS = 200
# A ZIP may hold more entries than images (folders, notes, junk): this many, then it is refused.
ARCHIVE_ENTRIES_PER_IMAGE = 10
# How many URLs are fetched at once during intake.
FETCH_THREADS = 8
# Runs at the engine, for the dispatch limit: sent or being sent, no result yet.
IN_FLIGHT = (
    Run.Status.PENDING,
    Run.Status.SUBMITTING,
    Run.Status.QUEUED,
    Run.Status.DISPATCHING,
    Run.Status.RUNNING,
)
FAILED = (Run.Status.FAILED, Run.Status.NOT_SUBMITTED, Run.Status.STALE)
# A 429 without a usable Retry-After pauses dispatch this long (seconds).
DEFAULT_PAUSE = 10.0
CANCELED_MESSAGE = "Canceled before it was sent: the batch was canceled."


class BatchError(Exception):
    """An action the batch cannot take now, in a sentence for the person."""


# --- what the person gives ------------------------------------------------------------------


def parse_concepts(text: str) -> list[str]:
    """One concept per line (commas split too), blanks dropped, repeats kept once (the first
    spelling). Raises BatchError with a sentence when there are none, too many or one too long."""
    concepts: list[str] = []
    seen: set[str] = set()
    for part in re.split(r"[,\n\r]+", text or ""):
        concept = " ".join(part.split())
        if not concept:
            continue
        if len(concept) > MAX_CONCEPT_CHARS:
            raise BatchError(
                f"A concept may be at most {MAX_CONCEPT_CHARS} characters; "
                f"“{concept[:40]}…” has {len(concept):,}."
            )
        if concept.casefold() not in seen:
            seen.add(concept.casefold())
            concepts.append(concept)
    if not concepts:
        raise BatchError("Give at least one concept, one per line (e.g. helmet).")
    if len(concepts) > MAX_CONCEPTS:
        raise BatchError(
            f"A batch takes at most {MAX_CONCEPTS} concepts; this has {len(concepts):,}."
        )
    return concepts


def parse_urls(text: str) -> list[str]:
    """One URL per line, blank lines dropped. Each is checked when it is fetched."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def run_input(concept: str, options: dict[str, Any]) -> dict[str, Any]:
    """A batch run's input, exactly as the run form would make it for the same concept and
    options (so a run made either way is recognised as the same work)."""
    return schema.validate_input({"prompt": concept, **options})


def default_name(images: int, concepts: list[str]) -> str:
    shown = ", ".join(concepts[:3]) + ("…" if len(concepts) > 3 else "")
    return f"{_images(images)} × {shown}"[:200]


def _images(n: int) -> str:
    return f"{n:,} image{'s' if n != 1 else ''}"


def create_batch(
    *,
    owner: Any,
    concepts: list[str],
    options: dict[str, Any],
    files: Iterable[Any] = (),
    archive: Any = None,
    urls: Iterable[str] = (),
    run_again: bool = False,
    name: str = "",
    source_run: Run | None = None,
) -> Batch:
    """Keep what was given and queue its intake. ``files`` are uploaded files (kept in storage
    until taken in), ``archive`` an uploaded ZIP, ``urls`` image URLs; the form has checked
    their number. Nothing is taken in here: a 500-photo upload must not hold the request."""
    files, urls = list(files), list(urls)
    with transaction.atomic():
        batch = Batch.objects.create(
            owner=owner if getattr(owner, "is_authenticated", False) else None,
            name=name[:200],
            concepts=concepts,
            options={k: v for k, v in run_input(concepts[0], options).items() if k != "prompt"},
            run_again=run_again,
            intake_total=len(files) + len(urls) + (1 if archive is not None else 0),
            source_run=source_run,
        )
        position = 0
        for f in files:
            item = BatchItem(batch=batch, position=position, name=_shown_name(f.name))
            # Saved under a name of our own: the person's file name is only shown.
            item.upload.save(f"{batch.pk}-{position}", f, save=False)
            item.save()
            position += 1
        BatchItem.objects.bulk_create(
            BatchItem(batch=batch, position=position + n, name=url[:255], source_url=url[:2000])
            for n, url in enumerate(urls)
        )
        if archive is not None:
            batch.archive.save(f"{batch.pk}-archive.zip", archive, save=False)
            batch.archive_name = _shown_name(archive.name)
            batch.archive_first = position + len(urls)
            batch.save(update_fields=["archive", "archive_name", "archive_first"])
        intake_batch.enqueue(batch.pk)  # with the change: both or neither
    return batch


def _shown_name(name: str | None) -> str:
    """A file name as it is shown: no folders, no control characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:255] or "unnamed file"


# --- intake ---------------------------------------------------------------------------------


@task(priority=tasks.BATCH_PRIORITY)
def intake_batch(batch_id: int) -> str:
    """Take in the batch's waiting items, in order, then open it for preview. Works in slices
    of about a second, queueing itself again for the rest, so a run from the form waiting for
    the worker goes in between. Safe to run again after a worker died part way: what was
    taken in stays taken in."""
    # One worker at a time takes a batch in (two would fetch every image twice and trip over
    # each other's archive entries). The lock is the intake's lease: a worker that dies lets
    # go of it with its process, and its task, handed back to the queue, takes it again.
    with held(f"batch-intake:{batch_id}", wait=False) as ours:
        if not ours:
            return "being taken in by another worker"
        outcome = _intake(batch_id)
    # The rest is queued once the lock is let go, or the next slice could find it still held
    # and step aside.
    if outcome == "continues":
        intake_batch.enqueue(batch_id)
    return outcome


def _intake(batch_id: int) -> str:
    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None or batch.state != Batch.State.INTAKE:
        return "nothing to take in"
    deadline = time.monotonic() + SLICE_SECONDS
    waiting = list(batch.items.filter(state=BatchItem.State.WAITING).order_by("position"))
    urls = iter([item for item in waiting if item.source_url])
    # URLs are fetched a few at a time (the network is the slow part), a bounded window ahead
    # of the item being recorded (so memory holds a few images, not all of them); files and
    # what comes back are taken in here, one at a time, in order.
    pool = ThreadPoolExecutor(FETCH_THREADS)
    ahead: dict[int, Future[IntakeResult | ImageRejected]] = {}

    def top_up() -> None:
        while len(ahead) < 2 * FETCH_THREADS:
            item = next(urls, None)
            if item is None:
                return
            ahead[item.pk] = pool.submit(_fetch, item.source_url)

    try:
        for item in waiting:
            if _canceled(batch):
                return "canceled"
            if time.monotonic() > deadline:
                return "continues"
            top_up()
            taken = ahead.pop(item.pk).result() if item.source_url else _open_upload(item)
            _record(batch, item, taken)
    finally:
        # Fetches started for the next slice are dropped; it fetches them again.
        pool.shutdown(wait=False, cancel_futures=True)
    if batch.archive:
        if _canceled(batch):
            return "canceled"
        if not _take_archive(batch, deadline):
            return "continues"
    Batch.objects.filter(pk=batch.pk, state=Batch.State.INTAKE).update(state=Batch.State.READY)
    if not batch.name:
        accepted = accepted_items(batch).count()
        Batch.objects.filter(pk=batch.pk, name="").update(
            name=default_name(accepted, batch.concepts)
        )
    return "taken in"


def _canceled(batch: Batch) -> bool:
    return Batch.objects.filter(pk=batch.pk, state=Batch.State.CANCELED).exists()


def _fetch(url: str) -> IntakeResult | ImageRejected:
    try:
        return intake_url(url)
    except ImageRejected as exc:
        return exc


def _open_upload(item: BatchItem) -> IntakeResult | ImageRejected:
    try:
        with item.upload.open("rb") as f:
            return intake_upload(File(f))
    except ImageRejected as exc:
        return exc
    except OSError:
        logger.exception("Batch item %s: its upload could not be read", item.pk)
        return ImageRejected("The uploaded file could not be read back.", "missing")


def _record(batch: Batch, item: BatchItem, taken: IntakeResult | ImageRejected) -> None:
    """One item's outcome: accepted (with its stored image), a duplicate of an earlier item, or
    refused with the reason; the staged upload is removed either way. Only a waiting item is
    written: one canceled meanwhile stays as the cancel left it."""
    staged = item.upload.name
    fields: dict[str, Any] = {"upload": ""}
    if isinstance(taken, ImageRejected):
        fields.update(state=BatchItem.State.REFUSED, reason=taken.message)
    else:
        image = store_image(taken, original_name=item.name)
        first = batch.items.filter(image=image, state=BatchItem.State.ACCEPTED).first()
        fields["image"] = image
        if first is None:
            fields["state"] = BatchItem.State.ACCEPTED
        else:
            fields.update(
                state=BatchItem.State.DUPLICATE,
                duplicate_of=first,
                reason=f"The same image as {first.name}: taken once.",
            )
    with transaction.atomic():
        if BatchItem.objects.filter(pk=item.pk, state=BatchItem.State.WAITING).update(**fields):
            Batch.objects.filter(pk=batch.pk).update(intake_done=F("intake_done") + 1)
    if staged:
        runs.remove_files([staged])


def _take_archive(batch: Batch, deadline: float) -> bool:
    """The batch's ZIP: every entry becomes an item (refused ones with their reason), in the
    archive's order; True once all are taken in, False when the slice is over first (the
    next slice carries on after the entries already listed)."""
    limit = settings.SAM3WEB_BATCH_MAX_IMAGES
    first = batch.archive_first
    # An entry a stopped worker left half taken in is taken in again.
    batch.items.filter(position__gte=first, state=BatchItem.State.WAITING).delete()
    done = batch.items.filter(position__gte=first).count()
    position = first + done
    try:
        with batch.archive.open("rb") as f:
            for index, entry in enumerate(
                archives.read_archive(
                    f,
                    max_entries=limit * ARCHIVE_ENTRIES_PER_IMAGE,
                    max_entry_bytes=settings.SAM3WEB_MAX_IMAGE_BYTES,
                    max_total_bytes=settings.SAM3WEB_BATCH_MAX_UPLOAD_BYTES,
                )
            ):
                if index < done:
                    continue
                if _canceled(batch):
                    return True
                if time.monotonic() > deadline:
                    return False
                _take_entry(batch, entry, first + index, limit)
                position = first + index + 1
    except archives.ArchiveRejected as exc:
        _refuse_archive(batch, position, str(exc))
    except OSError:
        logger.exception("Batch %s: its archive could not be read", batch.pk)
        _refuse_archive(batch, position, "The uploaded archive could not be read back.")
    Batch.objects.filter(pk=batch.pk).update(intake_done=F("intake_done") + 1)
    staged = batch.archive.name or ""
    Batch.objects.filter(pk=batch.pk).update(archive="")
    runs.remove_files([staged])
    return True


def _take_entry(batch: Batch, entry: archives.Entry, position: int, limit: int) -> None:
    Batch.objects.filter(pk=batch.pk).update(intake_total=F("intake_total") + 1)
    item = BatchItem.objects.create(
        batch=batch, position=position, name=f"{batch.archive_name}: {entry.name}"[:255]
    )
    taken: IntakeResult | ImageRejected
    if entry.refused:
        taken = ImageRejected(entry.refused)
    elif batch.items.filter(state=BatchItem.State.ACCEPTED).count() >= limit:
        taken = ImageRejected(f"Past the batch's limit of {limit:,} images.")
    else:
        assert entry.data is not None
        try:
            taken = intake_bytes(entry.data)
        except ImageRejected as exc:
            taken = exc
    _record(batch, item, taken)


def _refuse_archive(batch: Batch, position: int, reason: str) -> None:
    BatchItem.objects.create(
        batch=batch,
        position=position,
        name=batch.archive_name or "archive",
        state=BatchItem.State.REFUSED,
        reason=reason,
    )


# --- preview and progress -------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """What Start would do: runs to send and to reuse, what they cost, whether it fits."""

    images: int
    refused: int
    duplicates: int
    concepts: int
    runs: int  # images × concepts
    reused: int  # of them, answered by runs the team already has
    to_send: int
    cost: Decimal
    left: Decimal | None  # what the owner (or the team) has left this month; None: no budget
    refusal: str  # why it does not fit, or ""


def accepted_items(batch: Batch) -> Any:
    return batch.items.filter(state=BatchItem.State.ACCEPTED).order_by("position")


def same_work(image_id: int, input_sha256: str) -> Run | None:
    """The team's run for this image and input that answered it (or will: one under way),
    succeeded first."""
    candidates = Run.objects.filter(
        image_id=image_id,
        input_sha256=input_sha256,
        status__in=[Run.Status.SUCCEEDED, Run.Status.WAITING, *IN_FLIGHT],
    ).only("pk", "status")
    found: Run | None = (
        candidates.filter(status=Run.Status.SUCCEEDED).order_by("-created_at").first()
    )
    return found or candidates.order_by("-created_at").first()


def _reusable(batch: Batch) -> int:
    """How many of the batch's image × concept pairs the team already has a run for."""
    if batch.run_again:
        return 0
    hashes = {schema_hash(batch, concept) for concept in batch.concepts}
    pairs = (
        Run.objects.filter(
            image_id__in=accepted_items(batch).values("image_id"),
            input_sha256__in=hashes,
            status__in=[Run.Status.SUCCEEDED, Run.Status.WAITING, *IN_FLIGHT],
        )
        .values("image_id", "input_sha256")
        .distinct()
    )
    return pairs.count()


def schema_hash(batch: Batch, concept: str) -> str:
    from segmentation.models import input_sha256

    return input_sha256(run_input(concept, batch.options))


def preview(batch: Batch) -> Preview:
    """What starting the batch would send and cost (before it is started)."""
    counts = dict(
        batch.items.order_by()
        .values_list("state")
        .annotate(n=Count("pk"))
        .values_list("state", "n")
    )
    images = counts.get(BatchItem.State.ACCEPTED, 0)
    total = images * len(batch.concepts)
    reused = _reusable(batch)
    to_send = total - reused
    standing = budgets.standing(batch.owner) if batch.owner is not None else None
    return Preview(
        images=images,
        refused=counts.get(BatchItem.State.REFUSED, 0),
        duplicates=counts.get(BatchItem.State.DUPLICATE, 0),
        concepts=len(batch.concepts),
        runs=total,
        reused=reused,
        to_send=to_send,
        cost=settings.SAM3WEB_PRICE_PER_IMAGE * to_send,
        left=standing.left if standing is not None else None,
        refusal=budgets.refusal(batch.owner, to_send) if to_send and batch.owner else "",
    )


@dataclass(frozen=True)
class Progress:
    total: int
    done: int  # succeeded
    failed: int  # failed, refused by the engine, or no result
    canceled: int  # never sent: the batch was canceled
    at_engine: int  # sent or being sent, no result yet
    waiting: int  # not sent yet
    reused: int  # answered by a run the team already had
    cost: Decimal  # what the batch's own runs cost so far (list price until billed)
    eta_seconds: int | None

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.canceled

    @property
    def percent(self) -> int:
        return 100 if not self.total else round(100 * self.finished / self.total)

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.finished >= self.total


def progress(batch: Batch) -> Progress:
    """The batch's runs by where they are, in two queries (the page asks every second or so)."""
    by_status = dict(
        batch.cells.values_list("run__status")
        .annotate(n=Count("pk"))
        .values_list("run__status", "n")
    )
    reused = batch.cells.filter(reused=True).count()
    total = accepted_items(batch).count() * len(batch.concepts)
    done = by_status.get(Run.Status.SUCCEEDED, 0)
    failed = sum(by_status.get(s, 0) for s in FAILED)
    canceled = by_status.get(Run.Status.CANCELED, 0)
    at_engine = sum(by_status.get(s, 0) for s in IN_FLIGHT)
    waiting = max(0, total - done - failed - canceled - at_engine)
    cost = batch.made_runs.aggregate(total=Sum(charge()))["total"] or Decimal(0)
    eta = None
    finished = done + failed + canceled
    if batch.started_at and batch.state == Batch.State.RUNNING and 0 < finished - reused < total:
        elapsed = (timezone.now() - batch.started_at).total_seconds()
        rate = (finished - reused) / max(elapsed, 0.001)
        eta = round((total - finished) / rate) if rate > 0 else None
    return Progress(total, done, failed, canceled, at_engine, waiting, reused, cost, eta)


# --- start, cancel, retry -------------------------------------------------------------------


def start(batch: Batch) -> bool:
    """Send the batch (True), or nothing when it was already started (Start pressed twice).
    Raises BatchError when it cannot start, and budgets.BudgetExceeded when it does not fit."""
    if batch.state == Batch.State.INTAKE:
        raise BatchError("The images are still being taken in: start once they all are.")
    if batch.state == Batch.State.CANCELED:
        raise BatchError("This batch was canceled.")
    if batch.state == Batch.State.RUNNING:
        return False
    shown = preview(batch)
    if not shown.images:
        raise BatchError("No image of this batch could be taken in, so there is nothing to run.")
    if shown.refusal:
        raise budgets.BudgetExceeded(shown.refusal)
    with transaction.atomic():
        started = Batch.objects.filter(pk=batch.pk, state=Batch.State.READY).update(
            state=Batch.State.RUNNING, started_at=timezone.now(), message=""
        )
        if started:
            start_batch.enqueue(batch.pk)  # with the change: both or neither
    return bool(started)


@task(priority=tasks.BATCH_PRIORITY)
def start_batch(batch_id: int) -> str:
    """Make the batch's runs, image by image, releasing them to dispatch as they are made; in
    slices of about a second, like intake. Safe to run again: a pair with its BatchRun is
    skipped."""
    batch = Batch.objects.filter(pk=batch_id).select_related("owner").first()
    if batch is None or batch.state != Batch.State.RUNNING:
        return "not running"
    deadline = time.monotonic() + SLICE_SECONDS
    made = 0
    have = set(batch.cells.values_list("item_id", "concept"))
    hashes = {concept: schema_hash(batch, concept) for concept in batch.concepts}
    for item in accepted_items(batch).select_related("image"):
        for concept in batch.concepts:
            if (item.pk, concept) in have:
                continue
            if _canceled(batch):
                _cancel_waiting(batch)
                return "canceled"
            if time.monotonic() > deadline:
                _dispatch_soon()
                start_batch.enqueue(batch.pk)
                return f"{made} made, more to come"
            try:
                _make_cell(batch, item, concept, hashes[concept])
            except IntegrityError:
                continue  # another start task made this pair a moment ago
            except budgets.BudgetExceeded as exc:
                Batch.objects.filter(pk=batch.pk).update(message=str(exc))
                _dispatch_soon()
                return "budget spent"
            made += 1
            if made == FIRST_RELEASE:
                _dispatch_soon()  # the first runs go while the rest are made
    _dispatch_soon()
    return f"{made} made"


# The first runs made go to dispatch at once, before the rest are made.
FIRST_RELEASE = 8
# Long work (intake, making runs) yields the worker this often, so other work goes between.
SLICE_SECONDS = 1.0


def _make_cell(batch: Batch, item: BatchItem, concept: str, sha: str) -> BatchRun:
    earlier = None if batch.run_again else same_work(item.image_id, sha)  # type: ignore[arg-type]
    with transaction.atomic():
        if earlier is not None:
            return BatchRun.objects.create(
                batch=batch, item=item, concept=concept, run=earlier, reused=True
            )
        run = runs.create_run(
            owner=batch.owner,
            image=item.image,  # type: ignore[arg-type]
            input=run_input(concept, batch.options),
            source_url=item.source_url,
            batch=batch,
        )
        return BatchRun.objects.create(batch=batch, item=item, concept=concept, run=run)


def cancel(batch: Batch) -> int | None:
    """Stop sending: intake stops, and runs not yet sent are canceled (what is at the engine
    finishes, and is billed). The number of runs canceled; None when the batch had already
    stopped (canceled before: Cancel pressed twice)."""
    with transaction.atomic():
        changed = Batch.objects.filter(
            pk=batch.pk, state__in=[Batch.State.INTAKE, Batch.State.READY, Batch.State.RUNNING]
        ).update(state=Batch.State.CANCELED, canceled_at=timezone.now())
        canceled = _cancel_waiting(batch)
        staged = [
            name
            for name in batch.items.filter(state=BatchItem.State.WAITING).values_list(
                "upload", flat=True
            )
            if name
        ]
        if changed:
            batch.items.filter(state=BatchItem.State.WAITING).update(
                state=BatchItem.State.REFUSED,
                reason="Not taken in: the batch was canceled.",
                upload="",
            )
            transaction.on_commit(lambda: runs.remove_files(staged))
    return canceled if changed else None


def _cancel_waiting(batch: Batch) -> int:
    return Run.objects.filter(batch=batch, status=Run.Status.WAITING).update(
        status=Run.Status.CANCELED, error_message=CANCELED_MESSAGE, updated_at=timezone.now()
    )


def retry_failed(batch: Batch) -> int:
    """Send again every run of the batch that failed, was refused, got no result or was never
    sent, as new runs (and make those not made yet). The number of runs to send."""
    if batch.state == Batch.State.INTAKE:
        raise BatchError("The images are still being taken in.")
    if batch.started_at is None:
        raise BatchError("This batch was never started: start it to send its runs.")
    cells = batch.cells.filter(
        Q(run=None) | Q(run__status__in=[*FAILED, Run.Status.CANCELED])
    ).select_related("item__image", "run")
    missing = accepted_items(batch).count() * len(batch.concepts) - batch.cells.count()
    count = cells.count() + max(0, missing)
    if not count:
        return 0
    refusal = budgets.refusal(batch.owner, count) if batch.owner else ""
    if refusal:
        raise budgets.BudgetExceeded(refusal)
    with transaction.atomic():
        Batch.objects.filter(pk=batch.pk).update(
            state=Batch.State.RUNNING,
            started_at=batch.started_at or timezone.now(),
            canceled_at=None,
            message="",
        )
        for cell in cells:
            assert cell.item.image is not None
            cell.run = runs.create_run(
                owner=batch.owner,
                image=cell.item.image,
                input=run_input(cell.concept, batch.options),
                source_url=cell.item.source_url,
                parent=cell.run,
                batch=batch,
            )
            cell.reused = False
            cell.save(update_fields=["run", "reused"])
        start_batch.enqueue(batch.pk)  # with the change: both or neither
    return count


# --- dispatch -------------------------------------------------------------------------------


@task(priority=tasks.BATCH_PRIORITY)
def dispatch_batches() -> str:
    return f"{dispatch()} released"


def dispatch() -> int:
    """Release waiting batch runs to the engine, up to the limit; the number released."""
    now = timezone.now()
    with transaction.atomic():
        # The lock: two workers dispatching at once would both see the same free slots.
        state, _ = Dispatch.objects.select_for_update().get_or_create(pk=1)
        if state.paused_until and state.paused_until > now:
            _dispatch_later(state.paused_until)
            return 0
        busy = Run.objects.filter(batch__isnull=False, status__in=IN_FLIGHT).count()
        free = settings.SAM3WEB_BATCH_CONCURRENCY - busy
        if free <= 0:
            return 0
        waiting = Run.objects.filter(
            status=Run.Status.WAITING, batch__state=Batch.State.RUNNING
        ).order_by("batch__started_at", "batch_id", "created_at", "id")
        released = 0
        for run in waiting.only("pk", "batch_id")[:free]:
            if Run.objects.filter(pk=run.pk, status=Run.Status.WAITING).update(
                status=Run.Status.PENDING
            ):
                tasks.enqueue_submit(run)
                released += 1
    return released


def _dispatch_later(when: dt.datetime) -> None:
    pending = DBTaskResult.objects.filter(
        status="READY", task_path=_DISPATCH_PATH, run_after__gte=when
    ).exists()
    if not pending:
        dispatch_batches.using(run_after=when).enqueue()  # with the change: both or neither


_DISPATCH_PATH = dispatch_batches.module_path


def _dispatch_soon() -> None:
    """Queue a dispatch unless one is already waiting to run."""
    queued = DBTaskResult.objects.filter(
        status="READY", task_path=_DISPATCH_PATH, run_after__lte=timezone.now()
    ).exists()
    if not queued:
        dispatch_batches.enqueue()


def throttled(run_id: Any, retry_after: float | None) -> bool:
    """The engine said 429 to a batch run: it waits again (it is not failed), and all batch
    dispatch pauses for Retry-After."""
    pause = retry_after if retry_after and retry_after > 0 else DEFAULT_PAUSE
    until = timezone.now() + dt.timedelta(seconds=pause)
    run = Run.objects.filter(pk=run_id).select_related("owner").first()
    if run is None:
        return False
    try:
        with transaction.atomic():
            state, _ = Dispatch.objects.select_for_update().get_or_create(pk=1)
            if run.owner is not None:
                budgets.reserve(run.owner)  # a refused run was not charged; a waiting one is
            back = Run.objects.filter(
                pk=run_id, status=Run.Status.NOT_SUBMITTED, provider_run_id=""
            ).update(status=Run.Status.WAITING, lease_until=None)
            if not back:
                transaction.set_rollback(True)
                return False
            if not state.paused_until or state.paused_until < until:
                state.paused_until = until
                state.save(update_fields=["paused_until"])
            _dispatch_later(state.paused_until)
    except budgets.BudgetExceeded:
        return False
    logger.info("Runflow asked to slow down: batch dispatch paused for %.1f s", pause)
    return True


@receiver(run_changed)
def _run_changed(sender: Any, run_id: Any, run: Run, **kwargs: Any) -> None:
    """A batch run moved on: a 429 makes it wait again; leaving the engine frees a slot."""
    if run.batch_id is None:
        return
    now = (
        Run.objects.filter(pk=run_id).values("status", "error_http_status", "error_details").first()
    )
    if now is None or now["status"] in IN_FLIGHT:
        return
    if now["status"] == Run.Status.NOT_SUBMITTED and now["error_http_status"] == 429:
        details = now["error_details"] if isinstance(now["error_details"], dict) else {}
        retry_after = details.get("retry_after")
        throttled(run_id, retry_after if isinstance(retry_after, int | float) else None)
        return
    _dispatch_soon()


@receiver(worker_starting)
def recover(sender: Any, **kwargs: Any) -> int:
    """Carry on with what a stopped worker left: intakes, batches being made, dispatch."""
    count = 0
    for state, work in ((Batch.State.INTAKE, intake_batch), (Batch.State.RUNNING, start_batch)):
        for batch_id in Batch.objects.filter(state=state).values_list("pk", flat=True):
            if not _queued(work, batch_id):
                work.enqueue(batch_id)
                count += 1
    _dispatch_soon()
    return count


def _queued(work: Any, *args: Any) -> bool:
    """Whether this task with these arguments is already waiting in the queue, or running (a
    dead worker's running tasks are handed back by the workers still running)."""
    return DBTaskResult.objects.filter(
        status__in=["READY", "RUNNING"], task_path=work.module_path, args_kwargs__args=list(args)
    ).exists()


def items_for_review(batch: Batch) -> Iterator[BatchItem]:
    return iter(accepted_items(batch).select_related("image"))


# --- a small batch made from a run ----------------------------------------------------------


def record_reuse(source: Run, started: list[Run], names: list[str], *, owner: Any) -> Batch:
    """ "Same prompts on other images": the runs just started from ``source`` kept together as a
    small batch (one concept: the source's prompt), so they can be followed, reviewed and
    exported like any batch. The runs were sent at once (a person is waiting on a few images,
    not a folder); they count against the dispatch limit like any batch run while at Runflow."""
    concept = (source.prompt or "object")[:MAX_CONCEPT_CHARS]
    options = {name: source.input.get(name) for name in Run.OPTION_NAMES if name in source.input}
    with transaction.atomic():
        batch = Batch.objects.create(
            owner=owner if getattr(owner, "is_authenticated", False) else None,
            name=f"Same prompts as run {str(source.pk)[:8]} on {_images(len(started))}",
            concepts=[concept],
            options=options,
            state=Batch.State.RUNNING,
            started_at=timezone.now(),
            source_run=source,
            intake_total=len(started),
            intake_done=len(started),
        )
        for position, (run, name) in enumerate(zip(started, names, strict=True)):
            item = BatchItem.objects.create(
                batch=batch,
                position=position,
                name=name[:255],
                source_url=run.source_url,
                image=run.image,
                state=BatchItem.State.ACCEPTED,
            )
            BatchRun.objects.create(batch=batch, item=item, concept=concept, run=run)
        Run.objects.filter(pk__in=[run.pk for run in started]).update(batch=batch)
    return batch
