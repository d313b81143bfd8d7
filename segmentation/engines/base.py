"""What every engine is, and what happens to its results whichever engine brought them.

An engine sends a run, looks up its result, and says where the result's masks are; everything
else is the same for every engine and lives here:

* ``submitted`` / ``not_submitted`` record the outcome of sending a run a worker has claimed;
* ``apply_result`` records a run's result exactly once (a callback and a poll may race);
* ``Engine.store_result`` copies the masks and the preview into our storage, builds the
  ``Mask`` rows, the overlay and the thumbnail.

Terminal states are final: the first terminal result wins; whatever arrives after it is
recorded by the caller and ignored here.
"""

from __future__ import annotations

import datetime as dt
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from segmentation import tasks
from segmentation.imaging import masks as mask_files
from segmentation.imaging import render
from segmentation.imaging.decode import ImageRejected
from segmentation.imaging.intake import intake_bytes
from segmentation.imaging.store import read_file
from segmentation.models import Mask, Run

logger = logging.getLogger(__name__)

# Masks (and the preview) downloaded at the same time when a result is stored.
DOWNLOADS_AT_ONCE = 4

# Only forwards: a slow poll saying "queued" must not undo a callback's "running".
PROGRESS_ORDER = [Run.Status.QUEUED, Run.Status.DISPATCHING, Run.Status.RUNNING]
# A terminal result may land on a run in any of these. NOT_SUBMITTED is among them: a create
# we gave up on may still have made the run, which then reports back.
OPEN_STATUSES = frozenset(
    {
        Run.Status.SUBMITTING,
        Run.Status.NOT_SUBMITTED,
        Run.Status.QUEUED,
        Run.Status.DISPATCHING,
        Run.Status.RUNNING,
        Run.Status.STALE,
    }
)


@dataclass(frozen=True)
class ProviderResult:
    """An engine's verdict on a run, in the engine's own words turned into ours."""

    run_id: str
    raw_status: str
    status: Run.Status
    output: dict[str, Any] | None
    duration_ms: int | None
    cost: Decimal | None
    completed_at: dt.datetime | None
    failure_code: str
    failure_stage: str
    failure_message: str
    event: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in Run.TERMINAL_STATUSES


@dataclass(frozen=True)
class MaskRef:
    """One mask in a result: where to get it, and what the engine said about it."""

    index: int  # the mask's position among the masks (0-based); also its colour
    url: str | None  # http(s) URL or data: URI; None if missing or unusable
    score: float | None
    box_norm: tuple[float, float, float, float] | None  # [cx, cy, w, h], normalized 0-1


@dataclass(frozen=True)
class EngineOutput:
    """The masks and preview of a run's result, and what could not be understood of it."""

    masks: list[MaskRef]
    preview_url: str | None
    found_in: str  # where the masks were found ("none" when nowhere)
    notes: list[str] = field(default_factory=list)


class Engine(ABC):
    """One way of running SAM 3. Subclasses send runs and fetch results; this class stores
    them."""

    name: ClassVar[str]  # stored in Run.engine
    label: ClassVar[str]  # for people: "Runflow"

    def unavailable(self) -> str:
        """Why runs cannot be submitted right now (no key configured, ...), or ""."""
        return ""

    @abstractmethod
    def submit(self, run: Run) -> str:
        """Send a run this worker has claimed (status SUBMITTING) and record the outcome with
        ``submitted`` or ``not_submitted``. Returns a word for the task's result."""

    @abstractmethod
    def refresh(self, run: Run) -> str:
        """Ask once for the run's result and apply what came back (``apply_result``). Returns
        the outcome, or "error" when the engine could not be asked (try again later)."""

    @abstractmethod
    def output(self, run: Run) -> EngineOutput:
        """The masks and preview in the run's stored output."""

    @abstractmethod
    def download(self, url: str, *, what: str) -> bytes:
        """The bytes of one mask or preview. Raises imaging.masks.ArtifactError."""

    def after_store(self, run: Run) -> None:
        """Anything to complete on the run once its masks are on the page (the cost, say)."""
        return None  # nothing, unless the engine says otherwise

    def first_poll_delay(self, run: Run) -> float:
        """Seconds before the first look at a submitted run's result."""
        return settings.SAM3WEB_POLL_FIRST

    # --- storing a result -------------------------------------------------------------------

    def store_result(self, run: Run) -> str:
        """Copy every mask and the preview into our storage, build the overlay and thumbnail.

        Safe to run again (after a crash, or to retry): masks already copied are kept."""
        parsed = self.output(run)
        notes = list(parsed.notes)
        for note in parsed.notes:
            logger.info("run=%s event=output_note note=%s", run.pk, note)
        if parsed.found_in == "none":
            logger.warning("run=%s event=no_masks", run.pk)

        copied = {m.index: m for m in run.masks.all()}
        todo = [r for r in parsed.masks if not (r.index in copied and copied[r.index].file)]
        preview_url = parsed.preview_url if parsed.preview_url and not run.preview else ""
        # The downloads go at once (each mostly waits on the network); decoding and storing
        # stay in this thread, one mask at a time, so memory stays that of one mask.
        pool = ThreadPoolExecutor(max_workers=DOWNLOADS_AT_ONCE)
        try:
            downloads = [pool.submit(self._download_mask, ref) for ref in todo]
            preview_download = (
                pool.submit(self.download, preview_url, what="the preview") if preview_url else None
            )
            for ref, download in zip(todo, downloads, strict=True):
                self._store_mask(run, ref, copied.get(ref.index), download)
        finally:
            # The preview may still be on its way: it is stored last, after the masks show.
            pool.shutdown(wait=False)

        stored = list(run.masks.order_by("index"))
        missing = [m for m in stored if not m.file]
        if missing:
            notes.insert(
                0,
                f"{len(missing)} of {len(stored)} masks could not be copied: "
                + " ".join(m.error for m in missing[:3]),
            )
        state = Run.Artifacts.PARTIAL if missing else Run.Artifacts.DONE
        Run.objects.filter(pk=run.pk).update(
            artifacts=state, artifact_notes=notes, mask_count=len(stored)
        )
        # The page shows the masks now (its viewer draws them from the masks themselves); what
        # nobody is waiting for comes after: the overlay for pages without JavaScript and the
        # history's thumbnail (tasks.recover_runs draws them again if a worker stops first),
        # the preview, the cost.
        _render_overlay(run, stored)
        if preview_download is not None:
            try:
                preview = intake_bytes(preview_download.result())
                run.preview.save(
                    f"{run.pk}.{preview.extension}", ContentFile(preview.data), save=False
                )
                Run.objects.filter(pk=run.pk).update(preview=run.preview.name)
            except (mask_files.ArtifactError, ImageRejected) as exc:
                notes.append(f"The preview could not be copied: {exc}")
                Run.objects.filter(pk=run.pk).update(artifact_notes=notes)
        self.after_store(run)
        logger.info(
            "run=%s event=copied artifacts=%s masks=%s missing=%s",
            run.pk, state, len(stored), len(missing),
        )  # fmt: skip
        return str(state)

    def _download_mask(self, ref: MaskRef) -> bytes:
        if not ref.url:
            raise mask_files.ArtifactError(
                f"{self.label} gave no link for mask {ref.index + 1}.", True
            )
        return self.download(ref.url, what=f"mask {ref.index + 1}")

    def _store_mask(
        self, run: Run, ref: MaskRef, row: Mask | None, download: Future[bytes]
    ) -> None:
        image = run.image
        fields: dict[str, Any] = {"score": ref.score}
        box = (
            mask_files.box_to_pixels(ref.box_norm, image.width, image.height)
            if ref.box_norm
            else None
        )
        what = f"mask {ref.index + 1}"
        try:
            mask = mask_files.normalize_mask(
                download.result(),
                image.width,
                image.height,
                what=what,
                provider=self.label,
            )
        except mask_files.ArtifactError as exc:
            fields["error"] = exc.message
            Mask.objects.update_or_create(
                run=run, index=ref.index, defaults={**fields, **_box_fields(box)}
            )
            return
        box = box or mask.bbox  # the engine's box when it sent one, else the mask's own
        row = row or Mask(run=run, index=ref.index)
        if row.file:
            row.file.delete(save=False)
        row.file.save(f"{run.pk}-{ref.index}.png", ContentFile(mask.png), save=False)
        values = {
            **fields,
            "area": mask.area,
            "error": "",
            "copied_at": timezone.now(),
            **_box_fields(box),
        }
        for key, value in values.items():
            setattr(row, key, value)
        row.save()


def _box_fields(box: tuple[int, int, int, int] | None) -> dict[str, int | None]:
    names = ("x_min", "y_min", "x_max", "y_max")
    return dict(zip(names, box or (None, None, None, None), strict=True))


def _render_overlay(run: Run, stored: list[Mask]) -> None:
    image = run.image

    def coloured() -> Iterator[tuple[bytes, tuple[int, int, int]]]:
        # One mask in memory at a time, however many there are.
        for m in stored:
            if m.file:
                yield read_file(m.file), render.colour_for(m.index)

    overlay = render.render_overlay(coloured(), image.width, image.height)
    with image.file.open("rb") as f:
        thumb = render.render_thumbnail(f.read(), overlay)
    for file, name, data in (
        (run.overlay, f"{run.pk}.png", overlay),
        (run.thumbnail, f"{run.pk}.jpg", thumb),
    ):
        if file:
            file.delete(save=False)
        file.save(name, ContentFile(data), save=False)
    Run.objects.filter(pk=run.pk).update(overlay=run.overlay.name, thumbnail=run.thumbnail.name)


# --- submitting ---------------------------------------------------------------------------------


def submitted(
    run: Run,
    *,
    provider_run_id: str,
    provider_status: str,
    status: Run.Status,
    response: dict[str, Any] | None,
    engine: Engine,
) -> bool:
    """The engine took the run: record it and start looking for its result. False when the run
    was no longer ours to record (another worker took over after our lease ran out)."""
    if status not in Run.AT_ENGINE:
        status = Run.Status.QUEUED  # a finished run is reported by callback or poll, once
    now = timezone.now()
    # The run's new state and its first poll are committed together, or neither: a run at the
    # engine with no poll would wait for ever if the database went away in between. If
    # neither, the submit task goes back to the queue and its next attempt adopts the run the
    # engine made (see RunflowEngine.submit).
    # What only the submit knows: what was sent, the engine's answer, when.
    sent = {
        "provider_run_id": provider_run_id[:100],
        "provider_response": response,
        "request_body": run.request_body,
        "image_delivery": run.image_delivery,
        "submitted_at": now,
        "lease_until": None,
    }
    with transaction.atomic():
        saved = Run.objects.filter(pk=run.pk, status=Run.Status.SUBMITTING).update(
            **sent,
            status=status,
            provider_status=provider_status[:40],
            error_http_status=None,
            error_code="",
            error_message="",
            error_details=None,
            poll_deadline_at=now + dt.timedelta(seconds=settings.SAM3WEB_POLL_DEADLINE),
        )
        if saved:
            tasks.schedule_poll(str(run.pk), delay=engine.first_poll_delay(run))
            return True
    # The result may have come first: a fast engine's callback can beat the answer to our own
    # create. Keep what only the submit knows; the status stays the result's.
    Run.objects.filter(
        pk=run.pk,
        provider_run_id__in=("", provider_run_id[:100]),
        submitted_at__isnull=True,
        status__in=(*Run.TERMINAL_STATUSES, *Run.AT_ENGINE),
    ).update(**sent)
    return False


def not_submitted(
    run: Run, *, http_status: int | None, code: str, message: str, details: Any
) -> None:
    """The run could not be sent: keep the reason (and what was sent) for the person, who may
    submit it again."""
    Run.objects.filter(pk=run.pk, status=Run.Status.SUBMITTING).update(
        status=Run.Status.NOT_SUBMITTED,
        error_http_status=http_status,
        error_code=code[:100],
        error_message=message,
        error_details=details,
        lease_until=None,
        request_body=run.request_body,
        image_delivery=run.image_delivery,
    )


# --- results ------------------------------------------------------------------------------------


def unknown_at_engine(run: Run, *, engine: Engine, code: str, http_status: int | None) -> str:
    """The engine says it does not know the run (deleted there, its retention over, made with
    another account's key): its result can never come, so stop looking and say so. The person
    may send it again as a new run."""
    Run.objects.filter(pk=run.pk, status__in=(*Run.AT_ENGINE, Run.Status.STALE)).update(
        status=Run.Status.STALE,
        error_http_status=http_status,
        error_code=code[:50],
        error_message=(
            f"{engine.label} no longer knows this run ({code}): it was deleted there, or its "
            f"results are no longer kept. Its result cannot be fetched; submit it again to get one."
        ),
        error_details=None,
    )
    return "unknown"


def apply_result(run_id: Any, result: ProviderResult, *, source: str) -> str:
    """Record an engine's verdict on the run. Returns what happened: "applied" (a terminal
    result, now on the run), "progress" (a later non-terminal state), "duplicate" (the same
    terminal result again), "late" (a different one after the first), or "ignored".

    Conditional updates, not read-then-write: a callback and a poll racing for one run can
    both try, on SQLite or PostgreSQL, and exactly one of them changes the row. A succeeded run
    with an output queues the copy of its masks once the transaction commits."""
    now = timezone.now()
    if not result.terminal:
        ahead = PROGRESS_ORDER[PROGRESS_ORDER.index(result.status) :]
        behind = [s for s in PROGRESS_ORDER if s not in ahead]
        moved = Run.objects.filter(
            pk=run_id, status__in=[*behind, Run.Status.SUBMITTING, Run.Status.STALE]
        ).update(
            status=result.status,
            provider_status=result.raw_status,
            updated_at=now,
        )
        return "progress" if moved else "ignored"

    succeeded = result.status == Run.Status.SUCCEEDED
    fields: dict[str, Any] = {
        "status": result.status,
        "provider_status": result.raw_status,
        "output": result.output,
        "duration_ms": result.duration_ms,
        "cost": result.cost,
        "completed_at": result.completed_at or now,
        "failure_code": result.failure_code,
        "failure_stage": result.failure_stage,
        "failure_message": result.failure_message,
        "result_source": source,
        "lease_until": None,
        "updated_at": now,
        "artifacts": Run.Artifacts.PENDING if succeeded and result.output else Run.Artifacts.NONE,
    }
    with transaction.atomic():
        applied = Run.objects.filter(pk=run_id, status__in=OPEN_STATUSES).update(**fields)
        if applied:
            # The engine answered, so the run exists there even if our create gave up on it.
            Run.objects.filter(pk=run_id, provider_run_id="").update(
                provider_run_id=result.run_id, error_message="", error_code=""
            )
            if fields["artifacts"] == Run.Artifacts.PENDING:
                tasks.enqueue_copy(run_id)
            return "applied"
    current = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    if current == result.status:
        return "duplicate"
    return "late" if current in Run.TERMINAL_STATUSES else "ignored"
