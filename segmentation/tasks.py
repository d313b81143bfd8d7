"""Background work, run by the database worker (`manage.py worker`, which wraps `db_worker`).

Submitting is written so that one local run never makes two provider runs, whatever dies
when: a worker claims the run with a lease before calling Runflow; every attempt sends the
same body with Idempotency-Key = the run's id; and an attempt after one that may have
reached Runflow first looks for a provider run carrying our client_ref and adopts it."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.tasks import task
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from . import images, runflow
from .models import Run

logger = logging.getLogger(__name__)

PROVIDER_STATUSES = {
    "queued": Run.Status.QUEUED,
    "dispatching": Run.Status.DISPATCHING,
    "running": Run.Status.RUNNING,
    "succeeded": Run.Status.SUCCEEDED,
    "partial_succeeded": Run.Status.SUCCEEDED,
    "failed": Run.Status.FAILED,
    "canceled": Run.Status.CANCELED,
    "cancelled": Run.Status.CANCELED,
}


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

    status = PROVIDER_STATUSES.get(
        str(provider_run.get("status_code", "")).lower(), Run.Status.QUEUED
    )
    Run.objects.filter(pk=run.pk, status=Run.Status.SUBMITTING).update(
        status=status,
        provider_run_id=str(provider_run["id"])[:100],
        provider_status=str(provider_run.get("status_code", ""))[:40],
        provider_response=_without_inline_image(run, provider_run),
        request_body=run.request_body,
        image_delivery=run.image_delivery,
        submitted_at=timezone.now(),
        lease_until=None,
        error_http_status=None,
        error_code="",
        error_message="",
        error_details=None,
    )
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
        metadata=run.metadata,
    )
    # Saved with the outcome (success or refusal), in the same write.
    run.request_body = describe_body(run, body)
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


def describe_body(run: Run, body: dict[str, Any]) -> dict[str, Any]:
    """The create body as sent, except that an inline image is named rather than copied
    (it is the stored image file, base64-encoded, byte for byte)."""
    return _without_inline_image(run, body)


def _without_inline_image(run: Run, payload: dict[str, Any]) -> dict[str, Any]:
    # Runflow echoes the input in its answers: keeping the data: URI would store up to
    # 1.4 MB of base64 per run, twice, for bytes we already keep as the image file.
    echoed = payload.get("input")
    if not isinstance(echoed, dict) or not str(echoed.get("image_url", "")).startswith("data:"):
        return payload
    image = run.image
    named = f"data:{image.content_type};base64,… ({image.byte_size} bytes, sha256 {image.sha256})"
    return {**payload, "input": {**echoed, "image_url": named}}


def recover_runs() -> int:
    """Queue again every run that a stopped worker left pending or half-submitted.

    Run at worker start-up. A run still inside a live lease is queued to run when the
    lease ends, so a worker that is merely slow keeps its run."""
    now = timezone.now()
    live_tasks = set(
        DBTaskResult.objects.filter(
            task_path=f"{submit_run.module_path}", status="READY"
        ).values_list("id", flat=True)
    )
    live_tasks = {str(t) for t in live_tasks}
    count = 0
    for run in Run.objects.filter(status__in=Run.LOCAL_STATUSES).only(
        "pk", "status", "lease_until", "task_id"
    ):
        if run.status == Run.Status.PENDING and run.task_id in live_tasks:
            continue
        run_after = None
        if run.status == Run.Status.SUBMITTING and run.lease_until and run.lease_until > now:
            run_after = run.lease_until
        with transaction.atomic():
            enqueue_submit(run, run_after=run_after)
        count += 1
    return count
