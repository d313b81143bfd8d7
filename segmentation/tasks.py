"""Background work, run by the database worker (`manage.py worker`, which wraps `db_worker`).

The tasks are thin: each finds the run, decides whether it is still this task's to act on, and
hands the work to the run's engine (``segmentation.engines``). What belongs to no engine lives
here: claiming a run before it is sent, the chain of polls and its deadline, and queueing again
what a stopped worker left behind.

One local run never makes two provider runs, whatever dies when: a worker claims the run with
a lease before its engine sends it, and the engine sends every attempt with the same
idempotency key (see the Runflow engine for how a lost answer is recovered).

Polling and copying results are chains of tasks per run; each run remembers the id of the one
task that is its current link (poll_task_id, artifacts_task_id), so a duplicate task (a "check
again" click, a recovery after a crash) finds it is not current and does nothing."""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.tasks import TaskContext, task
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from segmentation import engines
from segmentation.imaging.store import storage_unavailable
from segmentation.locks import held
from segmentation.models import Run
from segmentation.signals import run_changed

logger = logging.getLogger(__name__)


def changed(run: Run) -> None:
    """Tell whoever follows runs (the API's callbacks to callers) that this run may have
    changed, once the change is committed. ``run`` as the task loaded it: listeners read what
    changed themselves, but may skip the read for what never changes (its callback_url)."""

    def send() -> None:
        # A listener's failure must not undo (or fail) the work that changed the run.
        for receiver, error in run_changed.send_robust(sender=Run, run_id=run.pk, run=run):
            if isinstance(error, Exception):
                logger.error("%s failed for run %s", receiver, run.pk, exc_info=error)

    transaction.on_commit(send)


# --- submitting -------------------------------------------------------------------------------


# Batches' tasks (their intake, dispatch and runs' submits) go after everything else queued: a
# run from the form (or the API) is never stuck behind a big batch.
BATCH_PRIORITY = -10


def enqueue_submit(run: Run, *, run_after: dt.datetime | None = None) -> None:
    """Queue the submit task in the transaction that makes (or resets) the run: both are
    committed, or neither. A worker cannot see the task before it can read the run, and no
    run is left waiting for a submit that was never queued (as one queued after the commit
    would be, were the database to go away in between)."""
    priority = BATCH_PRIORITY if run.batch_id is not None else 0
    with transaction.atomic():
        result = submit_run.using(run_after=run_after, priority=priority).enqueue(str(run.pk))
        Run.objects.filter(pk=run.pk).update(task_id=result.id)


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
        lease_until=now + dt.timedelta(seconds=settings.SAM3WEB_SUBMIT_LEASE),
    )
    if not claimed:
        return "not claimed"
    run = Run.objects.select_related("image").get(pk=run_id)
    engine = engines.for_run(run)
    try:
        outcome = engine.submit(run)
    except Exception as exc:
        if storage_unavailable(exc):
            return _submit_when_storage_is_back(run, exc)
        # A bug or a broken store, not the engine's refusal: say so on the run (instead of
        # leaving it "submitting" for the recovery to retry forever), and keep the traceback
        # in the task result by raising.
        Run.objects.filter(pk=run.pk, status=Run.Status.SUBMITTING).update(
            status=Run.Status.NOT_SUBMITTED,
            error_http_status=None,
            error_code="INTERNAL_ERROR",
            error_message=f"sam3web could not submit this run ({type(exc).__name__}: {exc}).",
            error_details=None,
            lease_until=None,
            request_body=run.request_body,
            image_delivery=run.image_delivery,
        )
        changed(run)
        logger.warning("run=%s event=submit_failed error=%s", run.pk, type(exc).__name__)
        raise
    except BaseException:
        # The worker is stopping (Ctrl+C) in the middle of the send: the request may or may not
        # have reached the engine. Release the claim so the next worker sends it again at once,
        # with the same idempotency key, and the engine still makes one run of it.
        Run.objects.filter(pk=run.pk, status=Run.Status.SUBMITTING).update(
            lease_until=timezone.now()
        )
        raise
    changed(run)
    logger.info("run=%s event=submit outcome=%s attempt=%s", run.pk, outcome, run.submit_attempts)
    return outcome


# The error code a run waiting to be sent shows while the storage cannot give its image.
STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"


def _submit_when_storage_is_back(run: Run, exc: Exception) -> str:
    """The image could not be read from the storage (a bucket unreachable): nothing was sent.
    The run waits, pending, and is sent again later, for as long as it takes; its page says
    why it waits."""
    first, most = settings.SAM3WEB_STORAGE_RETRY_FIRST, settings.SAM3WEB_STORAGE_RETRY_MAX
    delay = min(most, first * 2 ** min(run.submit_attempts - 1, 20))
    logger.warning(
        "run=%s event=storage_wait step=submit error=%s retry_in=%.1f detail=%s",
        run.pk,
        type(exc).__name__,
        delay,
        exc,
    )
    with transaction.atomic():
        if Run.objects.filter(pk=run.pk, status=Run.Status.SUBMITTING).update(
            status=Run.Status.PENDING, lease_until=None, error_code=STORAGE_UNAVAILABLE
        ):
            enqueue_submit(run, run_after=timezone.now() + dt.timedelta(seconds=delay))
    changed(run)
    return "waiting for storage"


# --- polling ----------------------------------------------------------------------------------


def schedule_poll(run_id: str, *, delay: float) -> None:
    """Make a new poll the run's current link; any older poll task will step aside."""
    run_after = timezone.now() + dt.timedelta(seconds=delay)
    # One transaction: with the database queue, no worker can see the task before the run
    # names it as current (or it would step aside as superseded and end the chain).
    with transaction.atomic():
        result = poll_run.using(run_after=run_after).enqueue(run_id)
        Run.objects.filter(pk=run_id).update(poll_task_id=result.id)


def poll_delay(attempt: int) -> float:
    """The wait before the next poll: about 0.25 s, 0.4 s, 0.65 s, 1 s, 1.6 s, 2.6 s, ... up to
    30 s, with jitter so runs don't poll in lockstep. Early polls catch a fast run (SAM 3 on a
    warm GPU answers in well under a second) at once; a slow one is soon asked rarely."""
    base = settings.SAM3WEB_POLL_FIRST * (1.6 ** max(0, attempt - 1))
    return min(settings.SAM3WEB_POLL_MAX_INTERVAL, base) * random.uniform(0.85, 1.0)


@task(takes_context=True)
def poll_run(context: TaskContext, run_id: str) -> str:
    run = Run.objects.filter(pk=run_id).first()
    if run is None or run.poll_task_id != str(context.task_result.id):
        return "superseded"
    if run.status not in Run.AT_ENGINE or not run.provider_run_id:
        return "nothing to poll"
    attempt = run.poll_attempts + 1
    Run.objects.filter(pk=run_id).update(poll_attempts=attempt)
    engine = engines.for_run(run)
    # Transient or not, a look that fails is tried again later; the deadline bounds it.
    outcome = engine.refresh(run)
    logger.info("run=%s event=poll attempt=%s outcome=%s", run_id, attempt, outcome)
    changed(run)
    run.refresh_from_db(fields=["status", "poll_deadline_at"])
    if run.status not in Run.AT_ENGINE:
        return outcome  # finished, or the engine does not know the run: nothing more to ask
    if run.poll_deadline_at and timezone.now() >= run.poll_deadline_at:
        minutes = round(settings.SAM3WEB_POLL_DEADLINE / 60)
        Run.objects.filter(pk=run_id, status__in=Run.AT_ENGINE).update(
            status=Run.Status.STALE,
            error_message=(
                f"{engine.label} has not reported a result for this run in {minutes} minutes. "
                f"Check again, or look for the run at {engine.label}."
            ),
        )
        changed(run)
        logger.info("run=%s event=stale", run_id)
        return "stale"
    schedule_poll(run_id, delay=poll_delay(attempt))
    return outcome


# --- storing results --------------------------------------------------------------------------


def enqueue_copy(run_id: Any) -> None:
    """Queue the copy of a run's masks and make it the run's current copy, in the transaction
    of the change that calls for it: both are committed, or neither. (Queued after the commit,
    a database going away in between would leave the run waiting for a copy nobody makes.)
    The database queue's worker cannot see the task before the run's change either way."""
    with transaction.atomic():  # see schedule_poll
        result = copy_artifacts.enqueue(str(run_id))
        Run.objects.filter(pk=run_id).update(artifacts_task_id=result.id)


@task(takes_context=True)
def copy_artifacts(context: TaskContext, run_id: str, storage_tries: int = 0) -> str:
    """Copy a succeeded run's masks and preview into our storage (see Engine.store_result).
    While the storage cannot take them (a bucket unreachable, a full disk) the run waits and
    this is tried again, for as long as it takes: masks already copied are kept."""
    run = Run.objects.select_related("image").filter(pk=run_id).first()
    if run is None or run.artifacts_task_id != str(context.task_result.id):
        return "superseded"
    if run.artifacts not in (Run.Artifacts.PENDING, Run.Artifacts.COPYING):
        return "nothing to copy"
    Run.objects.filter(pk=run_id).update(artifacts=Run.Artifacts.COPYING)
    try:
        return engines.for_run(run).store_result(run)
    except Exception as exc:
        if not storage_unavailable(exc):
            raise
        _copy_when_storage_is_back(run_id, storage_tries, exc)
        return "waiting for storage"
    finally:
        changed(run)


# The first words of the note a run waiting for its storage shows (views._common reads it).
STORAGE_WAIT_NOTE = "Waiting for storage"


def _copy_when_storage_is_back(run_id: str, tries: int, exc: Exception) -> None:
    first, most = settings.SAM3WEB_STORAGE_RETRY_FIRST, settings.SAM3WEB_STORAGE_RETRY_MAX
    delay = min(most, first * 2 ** min(tries, 20))
    logger.warning(
        "run=%s event=storage_wait error=%s retry_in=%.1f detail=%s",
        run_id,
        type(exc).__name__,
        delay,
        exc,
    )
    note = (
        f"{STORAGE_WAIT_NOTE}: the file storage cannot take the masks right now "
        f"({type(exc).__name__}). They are copied as soon as it is back."
    )
    with transaction.atomic():  # see schedule_poll
        result = copy_artifacts.using(
            run_after=timezone.now() + dt.timedelta(seconds=delay)
        ).enqueue(run_id, tries + 1)
        Run.objects.filter(pk=run_id).update(
            artifacts=Run.Artifacts.PENDING, artifacts_task_id=result.id, artifact_notes=[note]
        )


# --- after a stopped worker -------------------------------------------------------------------


def release_claim(task_path: str, args: list[Any]) -> None:
    """A task of a dead worker goes back to the queue: let go of what it had claimed, so the
    task, run again, takes it at once. A submit's lease is released (the submit is sent again
    with the same idempotency key: still one provider run); polls and copies claim nothing
    (the run names its current task, which stays current); a batch intake's lock went with the
    dead worker's connection or process."""
    if task_path == submit_run.module_path and args:
        Run.objects.filter(pk=args[0], status=Run.Status.SUBMITTING).update(
            lease_until=timezone.now()
        )


def recover_runs() -> int:
    """Queue again whatever a stopped worker left behind: runs pending or half-submitted,
    runs at the engine whose poll chain broke, and runs whose masks were being copied.

    Run at worker start-up, by one starting worker at a time (several starting together must
    not queue the same run twice). A task running on another worker counts as queued: if that
    worker is dead, the living ones hand its tasks back (segmentation.worker). A run still
    inside a live submit lease is queued to run when the lease ends, so a worker that is
    merely slow keeps its run."""
    with held("recover-runs"):
        return _recover_runs()


def _recover_runs() -> int:
    now = timezone.now()
    ready = {
        str(t)
        for t in DBTaskResult.objects.filter(status__in=["READY", "RUNNING"]).values_list(
            "id", flat=True
        )
    }
    count = 0
    for run in Run.objects.filter(status__in=Run.LOCAL_STATUSES).only(
        "pk", "status", "lease_until", "task_id", "batch_id"
    ):
        if run.task_id in ready:  # its submit is queued (one a stopped worker put back, say)
            continue
        run_after = None
        if run.status == Run.Status.SUBMITTING and run.lease_until and run.lease_until > now:
            run_after = run.lease_until
        with transaction.atomic():
            enqueue_submit(run, run_after=run_after)
        count += 1
    for run_id, poll_task_id in Run.objects.filter(status__in=Run.AT_ENGINE).values_list(
        "pk", "poll_task_id"
    ):
        if poll_task_id not in ready:
            schedule_poll(str(run_id), delay=0)
            count += 1
    for run_id, task_id in Run.objects.filter(
        artifacts__in=[Run.Artifacts.PENDING, Run.Artifacts.COPYING]
    ).values_list("pk", "artifacts_task_id"):
        if task_id not in ready:
            enqueue_copy(str(run_id))
            count += 1
    # Masks copied, but the worker stopped before drawing the overlay and thumbnail (drawn
    # after the masks show): copy again, which keeps the masks and draws those two.
    for run_id in (
        Run.objects.filter(
            artifacts__in=[Run.Artifacts.DONE, Run.Artifacts.PARTIAL], mask_count__gt=0, overlay=""
        )
        .exclude(artifacts_task_id="")  # copied by the task, not made some other way
        .values_list("pk", flat=True)
    ):
        Run.objects.filter(pk=run_id).update(artifacts=Run.Artifacts.PENDING)
        enqueue_copy(str(run_id))
        count += 1
    return count
