"""Background work, run by the database worker (`manage.py worker`, which wraps `db_worker`).

Submitting is written so that one local run never makes two provider runs, whatever dies
when: a worker claims the run with a lease before calling Runflow; every attempt sends the
same body with Idempotency-Key = the run's id; and an attempt after one that may have
reached Runflow first looks for a provider run carrying our client_ref and adopts it.

Polling and copying artifacts are chains of tasks per run; each run remembers the id of the
one task that is its current link (poll_task_id, artifacts_task_id), so a duplicate task (a
"check again" click, a recovery after a crash) finds it is not current and does nothing."""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F, Q
from django.tasks import TaskContext, task
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from . import artifacts, images, runflow
from .callbacks import callback_url
from .models import Mask, Run
from .results import STATUSES, BadResult, apply_result, parse_run_object

logger = logging.getLogger(__name__)


def submit_lease() -> dt.timedelta:
    return dt.timedelta(seconds=settings.SAM3WEB_SUBMIT_LEASE)


def enqueue_submit(run: Run, *, run_after: dt.datetime | None = None) -> None:
    """Queue the submit task once the surrounding transaction has committed (a worker must
    never see a task for a run it cannot read yet)."""

    def _enqueue() -> None:
        t = submit_run.using(run_after=run_after) if run_after else submit_run
        result = t.enqueue(str(run.pk))
        Run.objects.filter(pk=run.pk).update(task_id=result.id)

    transaction.on_commit(_enqueue)


@task
def submit_run(run_id: str) -> str:
    now = timezone.now()
    # Claim: only a pending run, or one whose previous worker's lease ran out, is ours.
    claimed = Run.objects.filter(
        Q(status=Run.Status.PENDING) | Q(status=Run.Status.SUBMITTING, lease_until__lt=now),
        pk=run_id,
        provider_run_id="",
    ).update(
        status=Run.Status.SUBMITTING,
        submit_attempts=F("submit_attempts") + 1,
        submit_started_at=now,
        lease_until=now + submit_lease(),
    )
    if not claimed:
        return "not claimed"
    run = Run.objects.select_related("image").get(pk=run_id)

    with runflow.get_client() as client:
        try:
            provider_run = None
            if run.submit_attempts > 1:
                # An earlier attempt may have created the run before its worker died.
                provider_run = client.find_run_by_client_ref(str(run.pk))
            if provider_run is None:
                provider_run = _create(run, client)
        except runflow.RunflowError as exc:
            logger.warning("Run %s not submitted: %s", run.pk, exc.summary())
            _not_submitted(
                run,
                http_status=exc.status_code,
                code=exc.code,
                message=exc.summary(),
                details={"errors": exc.errors, "fields": exc.field_messages()},
            )
            return "not submitted"
        except Exception as exc:
            # A bug or a broken store, not Runflow: say so on the run (instead of leaving it
            # "submitting" for the recovery to retry forever), and keep the traceback in the
            # task result by raising.
            _not_submitted(
                run,
                http_status=None,
                code="INTERNAL_ERROR",
                message=f"sam3web could not submit this run ({type(exc).__name__}: {exc}).",
                details=None,
            )
            raise

    status = STATUSES.get(str(provider_run.get("status_code", "")).lower(), Run.Status.QUEUED)
    if status not in Run.AT_RUNFLOW:
        status = Run.Status.QUEUED  # a finished run is reported by callback or poll, once
    saved = Run.objects.filter(pk=run.pk, status=Run.Status.SUBMITTING).update(
        status=status,
        provider_run_id=str(provider_run["id"])[:100],
        provider_status=str(provider_run.get("status_code", ""))[:40],
        provider_response=without_inline_image(run, provider_run),
        request_body=run.request_body,
        image_delivery=run.image_delivery,
        submitted_at=timezone.now(),
        lease_until=None,
        error_http_status=None,
        error_code="",
        error_message="",
        error_details=None,
        poll_deadline_at=timezone.now() + dt.timedelta(seconds=settings.SAM3WEB_POLL_DEADLINE),
    )
    if saved:
        # Without a callback URL polling is how the result comes; with one, a late safety net.
        first = settings.SAM3WEB_CALLBACK_GRACE if callback_url(run.pk) else 0
        schedule_poll(str(run.pk), delay=max(first, settings.SAM3WEB_POLL_FIRST))
    return "submitted"


def _not_submitted(
    run: Run, *, http_status: int | None, code: str, message: str, details: Any
) -> None:
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


def _create(run: Run, client: runflow.RunflowClient) -> dict[str, Any]:
    body = runflow.build_create_body(
        input={"image_url": resolve_image_url(run, client), **run.input},
        client_ref=str(run.pk),
        callback_url=callback_url(run.pk),
        metadata=run.metadata,
    )
    # Saved with the outcome (success or refusal), in the same write.
    run.request_body = without_inline_image(run, body)
    try:
        return client.create_run(idempotency_key=str(run.pk), **body)
    except runflow.RunflowError as exc:
        # 409: this Idempotency-Key already made a run (sent with another body by an earlier
        # attempt). That run is ours: adopt it rather than report an error.
        if exc.status_code == 409:
            existing = client.find_run_by_client_ref(str(run.pk))
            if existing is not None:
                return existing
        raise


def resolve_image_url(run: Run, client: runflow.RunflowClient) -> str:
    """What Runflow gets as image_url: the person's own https URL when our copy is the same
    image; otherwise our copy, inline when small, through the asset upload when large."""
    image = run.image
    if run.source_url.startswith("https://") and not image.converted:
        run.image_delivery = "url"
        return run.source_url
    if image.byte_size <= settings.RUNFLOW_INLINE_MAX_BYTES:
        run.image_delivery = "inline"
        with image.file.open("rb") as f:
            return images.data_uri(f.read(), image.content_type)
    run.image_delivery = "asset"
    if not run.asset_url:
        # Uploaded once per run, so a retried create sends an identical body.
        with image.file.open("rb") as f:
            data = f.read()
        extension = image.file.name.rsplit(".", 1)[-1]
        run.asset_url = client.upload_asset(
            data=data, filename=f"{image.sha256[:16]}.{extension}", mime_type=image.content_type
        )
        Run.objects.filter(pk=run.pk).update(asset_url=run.asset_url, image_delivery="asset")
    return run.asset_url


def without_inline_image(run: Run, payload: dict[str, Any]) -> dict[str, Any]:
    """A create body (or Runflow's answer, which echoes the input) with an inline image named
    rather than copied: it is the stored image file, base64-encoded, byte for byte. Keeping
    the data: URI would store up to 1.4 MB of base64 per run, twice."""
    echoed = payload.get("input")
    if not isinstance(echoed, dict) or not str(echoed.get("image_url", "")).startswith("data:"):
        return payload
    image = run.image
    named = f"data:{image.content_type};base64,… ({image.byte_size} bytes, sha256 {image.sha256})"
    return {**payload, "input": {**echoed, "image_url": named}}


def recover_runs() -> int:
    """Queue again whatever a stopped worker left behind: runs pending or half-submitted,
    runs at Runflow whose poll chain broke, and runs whose masks were being copied.

    Run at worker start-up. A run still inside a live submit lease is queued to run when
    the lease ends, so a worker that is merely slow keeps its run."""
    now = timezone.now()
    ready = {
        str(t) for t in DBTaskResult.objects.filter(status="READY").values_list("id", flat=True)
    }
    count = 0
    for run in Run.objects.filter(status__in=Run.LOCAL_STATUSES).only(
        "pk", "status", "lease_until", "task_id"
    ):
        if run.status == Run.Status.PENDING and run.task_id in ready:
            continue
        run_after = None
        if run.status == Run.Status.SUBMITTING and run.lease_until and run.lease_until > now:
            run_after = run.lease_until
        with transaction.atomic():
            enqueue_submit(run, run_after=run_after)
        count += 1
    for run_id, poll_task_id in Run.objects.filter(status__in=Run.AT_RUNFLOW).values_list(
        "pk", "poll_task_id"
    ):
        if poll_task_id not in ready:
            schedule_poll(str(run_id), delay=0)
            count += 1
    for run_id, task_id in Run.objects.filter(
        artifacts__in=[Run.Artifacts.PENDING, Run.Artifacts.COPYING]
    ).values_list("pk", "artifacts_task_id"):
        if task_id not in ready:
            _enqueue_artifacts_now(str(run_id))
            count += 1
    return count


# --- polling ------------------------------------------------------------------------------


def schedule_poll(run_id: str, *, delay: float) -> None:
    """Make a new poll the run's current link; any older poll task will step aside."""
    run_after = timezone.now() + dt.timedelta(seconds=delay)
    # One transaction: with the database queue, no worker can see the task before the run
    # names it as current (or it would step aside as superseded and end the chain).
    with transaction.atomic():
        result = poll_run.using(run_after=run_after).enqueue(run_id)
        Run.objects.filter(pk=run_id).update(poll_task_id=result.id, next_poll_at=run_after)


def poll_delay(attempt: int) -> float:
    """About 2 s, 3 s, 4.5 s, ... up to 30 s, with jitter so runs don't poll in lockstep."""
    base = settings.SAM3WEB_POLL_FIRST * (1.5 ** max(0, attempt - 1))
    return min(settings.SAM3WEB_POLL_MAX_INTERVAL, base) * random.uniform(0.85, 1.0)


@task(takes_context=True)
def poll_run(context: TaskContext, run_id: str) -> str:
    run = Run.objects.filter(pk=run_id).first()
    if run is None or run.poll_task_id != str(context.task_result.id):
        return "superseded"
    if run.status not in (*Run.AT_RUNFLOW, Run.Status.STALE) or not run.provider_run_id:
        return "nothing to poll"
    attempt = run.poll_attempts + 1
    Run.objects.filter(pk=run_id).update(poll_attempts=attempt)
    try:
        with runflow.get_client() as client:
            outcome = apply_result(
                run_id, parse_run_object(client.get_run(run.provider_run_id)), source="poll"
            )
    except (runflow.RunflowError, BadResult) as exc:
        # Transient or not, a poll that fails is tried again later; the deadline bounds it.
        logger.warning("Polling run %s failed: %s", run_id, exc)
        outcome = "error"
    run.refresh_from_db(fields=["status", "poll_deadline_at"])
    if run.status in Run.TERMINAL_STATUSES:
        return outcome
    if run.poll_deadline_at and timezone.now() >= run.poll_deadline_at:
        minutes = round(settings.SAM3WEB_POLL_DEADLINE / 60)
        Run.objects.filter(pk=run_id, status__in=Run.AT_RUNFLOW).update(
            status=Run.Status.STALE,
            error_message=(
                f"Runflow has not reported a result for this run in {minutes} minutes. "
                "Check again, or look for the run at Runflow."
            ),
        )
        return "stale"
    schedule_poll(run_id, delay=poll_delay(attempt))
    return outcome


def resubmit(run: Run) -> bool:
    """A person sends a run Runflow refused once more (same body, same Idempotency-Key)."""
    updated = Run.objects.filter(pk=run.pk, status=Run.Status.NOT_SUBMITTED).update(
        status=Run.Status.PENDING, updated_at=timezone.now()
    )
    if updated:
        enqueue_submit(run)
    return bool(updated)


def check_again(run: Run) -> bool:
    """A person asks for a stale run to be polled again, with a fresh deadline."""
    deadline = timezone.now() + dt.timedelta(seconds=settings.SAM3WEB_POLL_DEADLINE)
    updated = Run.objects.filter(pk=run.pk, status=Run.Status.STALE).update(
        poll_deadline_at=deadline, poll_attempts=0, error_message=""
    )
    if updated:
        transaction.on_commit(lambda: schedule_poll(str(run.pk), delay=0))
    return bool(updated)


# --- artifacts ----------------------------------------------------------------------------


def enqueue_artifacts(run_id: Any) -> None:
    transaction.on_commit(lambda: _enqueue_artifacts_now(str(run_id)))


def _enqueue_artifacts_now(run_id: str) -> None:
    with transaction.atomic():  # see schedule_poll
        result = copy_artifacts.enqueue(run_id)
        Run.objects.filter(pk=run_id).update(artifacts_task_id=result.id)


def retry_artifacts(run: Run) -> bool:
    updated = Run.objects.filter(pk=run.pk, artifacts=Run.Artifacts.PARTIAL).update(
        artifacts=Run.Artifacts.PENDING
    )
    if updated:
        enqueue_artifacts(run.pk)
    return bool(updated)


@task(takes_context=True)
def copy_artifacts(context: TaskContext, run_id: str) -> str:
    """Copy every mask and the preview into our storage, build the overlay and thumbnail.

    Safe to run again (after a crash, or to retry): masks already copied are kept."""
    run = Run.objects.select_related("image").filter(pk=run_id).first()
    if run is None or run.artifacts_task_id != str(context.task_result.id):
        return "superseded"
    if run.artifacts not in (Run.Artifacts.PENDING, Run.Artifacts.COPYING):
        return "nothing to copy"
    Run.objects.filter(pk=run_id).update(artifacts=Run.Artifacts.COPYING)
    if run.cost is None:
        _fetch_cost(run)
    parsed = artifacts.parse_output(run.output)
    notes = list(parsed.notes)
    for note in parsed.notes:
        logger.info("Run %s output: %s", run_id, note)
    if parsed.found_in == "none":
        logger.warning("Run %s: no masks found in Runflow's output", run_id)

    copied = {m.index: m for m in run.masks.all()}
    for ref in parsed.masks:
        done = copied.get(ref.index)
        if done is not None and done.file:
            continue
        _copy_mask(run, ref, done)

    if parsed.preview_url and not run.preview:
        try:
            data = artifacts.download(parsed.preview_url, what="the preview")
            preview = images.intake_bytes(data)
            run.preview.save(f"{run.pk}.{preview.extension}", ContentFile(preview.data), save=False)
            Run.objects.filter(pk=run_id).update(preview=run.preview.name)
        except (artifacts.ArtifactError, images.ImageRejected) as exc:
            notes.append(f"The preview could not be copied: {exc}")

    masks = list(run.masks.order_by("index"))
    _render_overlay(run, masks)
    missing = [m for m in masks if not m.file]
    if missing:
        notes.insert(
            0,
            f"{len(missing)} of {len(masks)} masks could not be copied: "
            + " ".join(m.error for m in missing[:3]),
        )
    state = Run.Artifacts.PARTIAL if missing else Run.Artifacts.DONE
    Run.objects.filter(pk=run_id).update(
        artifacts=state, artifact_notes=notes, mask_count=len(masks)
    )
    return state


def _fetch_cost(run: Run) -> None:
    """Callbacks carry no cost; the run object does. One GET, and no harm if it fails."""
    try:
        with runflow.get_client() as client:
            result = parse_run_object(client.get_run(run.provider_run_id))
    except (runflow.RunflowError, BadResult) as exc:
        logger.info("Run %s: cost not fetched: %s", run.pk, exc)
        return
    if result.cost is not None:
        Run.objects.filter(pk=run.pk).update(cost=result.cost)


def _copy_mask(run: Run, ref: artifacts.MaskRef, row: Mask | None) -> None:
    image = run.image
    fields: dict[str, Any] = {
        "score": ref.score,
        "source_url": ref.url if ref.url and not ref.url.startswith("data:") else "",
    }
    box = artifacts.box_to_pixels(ref.box_norm, image.width, image.height) if ref.box_norm else None
    try:
        if not ref.url:
            raise artifacts.ArtifactError(f"Runflow gave no link for mask {ref.index + 1}.", True)
        what = f"mask {ref.index + 1}"
        mask = artifacts.normalize_mask(
            artifacts.download(ref.url, what=what), image.width, image.height, what=what
        )
    except artifacts.ArtifactError as exc:
        fields["error"] = exc.message
        box_fields = dict(
            zip(("x_min", "y_min", "x_max", "y_max"), box or (None,) * 4, strict=True)
        )
        Mask.objects.update_or_create(run=run, index=ref.index, defaults={**fields, **box_fields})
        return
    box = box or mask.bbox  # Runflow's box when it sent one, else the mask's own
    row = row or Mask(run=run, index=ref.index)
    if row.file:
        row.file.delete(save=False)
    row.file.save(f"{run.pk}-{ref.index}.png", ContentFile(mask.png), save=False)
    for key, value in {
        **fields,
        "area": mask.area,
        "error": "",
        "copied_at": timezone.now(),
        **dict(zip(("x_min", "y_min", "x_max", "y_max"), box or (None,) * 4, strict=True)),
    }.items():
        setattr(row, key, value)
    row.save()


def _render_overlay(run: Run, masks: list[Mask]) -> None:
    image = run.image

    def coloured() -> Any:
        # One mask in memory at a time, however many there are.
        for m in masks:
            if m.file:
                with m.file.open("rb") as f:
                    yield f.read(), artifacts.PALETTE[m.index % len(artifacts.PALETTE)]

    overlay = artifacts.render_overlay(coloured(), image.width, image.height)
    with image.file.open("rb") as f:
        thumb = artifacts.render_thumbnail(f.read(), overlay)
    for field, name, data in (
        (run.overlay, f"{run.pk}.png", overlay),
        (run.thumbnail, f"{run.pk}.jpg", thumb),
    ):
        if field:
            field.delete(save=False)
        field.save(name, ContentFile(data), save=False)
    Run.objects.filter(pk=run.pk).update(overlay=run.overlay.name, thumbnail=run.thumbnail.name)
