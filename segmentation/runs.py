"""The one place runs are made and acted on: creating a run, sending a refused one again,
checking again, copying again, deleting. Views, and later the API and batches, call these;
forms only validate.

Each action is a conditional update, so two clicks (or two teammates) act once, and acting on
a page that is out of date is harmless."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from accounts import budgets
from segmentation import engines, stored_exports, tasks
from segmentation.imaging.store import storage_unavailable
from segmentation.models import Batch, RemovedCharge, Run, SourceImage

if TYPE_CHECKING:
    from accounts.models import ApiToken

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiRequest:
    """What an API caller sent with a run besides its input (see the api app)."""

    token: ApiToken | None = None
    client_ref: str = ""
    callback_url: str = ""
    base_url: str = ""  # where the caller reached us: the base of the URLs we hand back
    request_sha256: str = ""  # the body's hash, to tell a replay from a reused key


class AlreadySubmitted(Exception):
    """The form (its submission key) already made this run: a second POST of the same form."""

    def __init__(self, run: Run) -> None:
        super().__init__(str(run.pk))
        self.run = run


def create_run(
    *,
    owner: Any,
    image: SourceImage,
    input: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    source_url: str = "",
    parent: Run | None = None,
    engine: str = engines.DEFAULT,
    submission_key: str = "",
    api: ApiRequest | None = None,
    batch: Batch | None = None,
) -> Run:
    """Store a run and queue its submit task, in one transaction: the task is queued once the
    run is committed, and a run is never stored without its task.

    ``input`` is SAM 3's input as ``schema.validate_input`` returns it (image_url left out: it
    is resolved from ``image`` when the run is sent); ``image`` went through intake;
    ``source_url`` is where the image came from when it was a URL (Runflow may be sent that
    URL instead of a copy). ``submission_key`` is the form's one-time key: a second run with
    the same key and owner is not made; AlreadySubmitted carries the first. ``api``: what an
    API caller sent besides the input. ``batch``: the run is one of that batch's; it waits
    (Status.WAITING) until batch dispatch releases it, instead of being sent at once.

    The run is charged against its owner's budget (and the team's) in the same transaction:
    budgets.BudgetExceeded, or budgets.RateLimited for the API, when it does not fit."""
    owner = owner if getattr(owner, "is_authenticated", False) else None
    if submission_key and owner is not None:
        earlier = Run.objects.filter(owner=owner, submission_key=submission_key).first()
        if earlier is not None:
            raise AlreadySubmitted(earlier)
    api = api or ApiRequest()
    budgets.prepare(owner, via_api=api.token is not None)
    try:
        with transaction.atomic():
            budgets.reserve(owner, via_api=api.token is not None)
            run = Run.objects.create(
                engine=engine,
                owner=owner,
                image=image,
                source_url=source_url[:2000],
                input=input,
                metadata=metadata,
                parent=parent,
                submission_key=submission_key[:100] if owner is not None else "",
                token=api.token,
                client_ref=api.client_ref,
                callback_url=api.callback_url,
                base_url=api.base_url,
                request_sha256=api.request_sha256,
                batch=batch,
                status=Run.Status.PENDING if batch is None else Run.Status.WAITING,
            )
            if batch is None:
                tasks.enqueue_submit(run)
    except IntegrityError:
        # Two POSTs of one form at the same moment: the other one made the run.
        earlier = Run.objects.filter(owner=owner, submission_key=submission_key).first()
        if earlier is None:
            raise
        raise AlreadySubmitted(earlier) from None
    logger.info(
        "run=%s event=created via=%s owner=%s batch=%s engine=%s",
        run.pk, "api" if api.token is not None else "web", run.owner_id, run.batch_id, engine,
    )  # fmt: skip
    return run


def resubmit(run: Run) -> bool:
    """Send a run the engine refused once more (same body, same idempotency key). It is
    charged again (a refused run was not): budgets.BudgetExceeded when that does not fit."""
    budgets.prepare(run.owner)
    with transaction.atomic():
        if run.owner is not None and run.status == Run.Status.NOT_SUBMITTED:
            budgets.reserve(run.owner)
        updated = Run.objects.filter(pk=run.pk, status=Run.Status.NOT_SUBMITTED).update(
            status=Run.Status.PENDING, updated_at=timezone.now()
        )
        if updated:
            tasks.enqueue_submit(run)
            logger.info("run=%s event=resubmitted", run.pk)
    return bool(updated)


def send_as_new(run: Run, *, owner: Any) -> Run:
    """A run whose result will never come (its engine no longer knows it, or it went stale),
    sent again as a new run: same image, prompts, options and metadata, a fresh id and so a
    fresh idempotency key. Clicked twice, it still makes one new run (AlreadySubmitted)."""
    return create_run(
        owner=owner,
        image=run.image,
        input=run.input,
        metadata=run.metadata,
        source_url=run.source_url,
        parent=run,
        engine=run.engine,
        submission_key=f"again:{run.pk}",
    )


def check_again(run: Run) -> bool:
    """Look for a stale run's result again, with a fresh deadline: the run is back with its
    engine (so its page follows it live) until a result, a refusal or the deadline comes."""
    deadline = timezone.now() + dt.timedelta(seconds=settings.SAM3WEB_POLL_DEADLINE)
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk, status=Run.Status.STALE).update(
            status=Run.Status.QUEUED,
            poll_deadline_at=deadline,
            poll_attempts=0,
            error_http_status=None,
            error_code="",
            error_message="",
            error_details=None,
        )
        if updated:
            tasks.schedule_poll(str(run.pk), delay=0)  # committed with the change, or neither
            logger.info("run=%s event=check_again", run.pk)
    return bool(updated)


def retry_copy(run: Run) -> bool:
    """Copy again the masks that could not be copied."""
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk, artifacts=Run.Artifacts.PARTIAL).update(
            artifacts=Run.Artifacts.PENDING
        )
        if updated:
            tasks.enqueue_copy(run.pk)
            logger.info("run=%s event=copy_again", run.pk)
    return bool(updated)


def busy(run: Run) -> str:
    """Why the run cannot be deleted this instant, if it cannot: a worker is writing to it."""
    if run.status == Run.Status.SUBMITTING:
        label = engines.for_run(run).label
        return f"The run is being sent to {label} right now. Try again in a few seconds."
    if run.artifacts in (Run.Artifacts.PENDING, Run.Artifacts.COPYING):
        return "The masks are being copied right now. Try again in a few seconds."
    return ""


def delete_run(run_id: Any) -> bool:
    """Delete the run with everything that is only its own, rows and files; False when it was
    already gone.

    The rows go in one transaction; the files are removed only once it has committed, so a
    failed delete leaves a whole run behind, never a run whose files are gone. The source image
    goes too when no other run uses it (images are stored once per content and shared)."""
    with transaction.atomic():
        run = Run.objects.filter(pk=run_id).select_related("image").first()
        if run is None:
            return False
        names = [f.name for f in (run.thumbnail, run.overlay, run.preview) if f.name]
        names += [name for name in run.masks.values_list("file", flat=True) if name]
        image = run.image
        pk = run.pk  # delete() forgets it
        amount = run.cost_shown  # charge()'s rule, on the row already read
        if amount:  # Runflow billed it: budgets keep counting it
            RemovedCharge.objects.create(
                owner_id=run.owner_id,
                token_id=run.token_id,
                run_created_at=run.created_at,
                amount=amount,
            )
        run.delete()  # masks and callback deliveries go with it (CASCADE)
        if not Run.objects.filter(image_id=image.pk).exists():
            try:
                with transaction.atomic():
                    image.delete()
            except (ProtectedError, IntegrityError):
                # Someone started a run on this image in the meantime: it stays.
                pass
            else:
                names += [f.name for f in (image.file, image.thumbnail, image.display) if f.name]
        transaction.on_commit(lambda: remove_files(names))
        transaction.on_commit(lambda: stored_exports.remove("runs", pk))
    logger.info("run=%s event=deleted files=%s", run_id, len(names))
    return True


def remove_files(names: list[str]) -> None:
    """Remove files from the storage (the objects, in a bucket) that no row names any more."""
    for name in names:
        try:
            default_storage.delete(name)
        except Exception as exc:
            if not (isinstance(exc, OSError) or storage_unavailable(exc)):
                raise
            # The rows are gone already; a file left behind is logged for an admin to remove
            # (`manage.py prune` finds files no row names).
            logger.exception("Could not remove %s", name)
