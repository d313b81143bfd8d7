from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Case, F, Value, When
from django.urls import reverse
from django.utils import timezone

from segmentation import engines, schema


class SourceImage(models.Model):
    """An image as the person sees it (EXIF orientation applied), stored once per content.

    All prompt coordinates of the runs that use it are pixels of this file."""

    file = models.FileField(upload_to="images/%Y/%m/")
    # A small JPEG for lists, so a page of history does not download whole photos.
    thumbnail = models.FileField(upload_to="thumbs/%Y/%m/", blank=True)
    # A copy at display size (the long side at most DISPLAY_SIZE) for pages, when the original
    # is larger: a 12 MP photo is not sent whole to show it 1,000 pixels wide.
    display = models.FileField(upload_to="display/%Y/%m/", blank=True)
    sha256 = models.CharField(max_length=64, unique=True)
    content_type = models.CharField(max_length=50)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    byte_size = models.PositiveBigIntegerField()
    # True when our copy differs from what was uploaded or fetched (rotated, converted, ...):
    # then Runflow must get our copy, never the original URL.
    converted = models.BooleanField(default=False)
    original_name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.original_name or self.sha256[:12]} ({self.width}×{self.height})"


def input_sha256(data: Any) -> str:
    """The same input, whatever its key order, hashes the same."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# The columns the history page filters on (see Run.Meta.indexes).
FILTERED = ["owner", "point_count", "box_count", "prompt_text"]
PROMPT_INDEXED = 250


class Run(models.Model):
    class Status(models.TextChoices):
        # A batch's run not yet released to its engine (see segmentation.batches.dispatch).
        WAITING = "waiting", "Waiting in its batch"
        PENDING = "pending", "Waiting to submit"
        SUBMITTING = "submitting", "Submitting"
        NOT_SUBMITTED = "not_submitted", "Not submitted"
        QUEUED = "queued", "Queued"
        DISPATCHING = "dispatching", "Dispatching"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Canceled"
        STALE = "stale", "No result yet"

    class Artifacts(models.TextChoices):
        NONE = "", "None"
        PENDING = "pending", "Waiting to copy"
        COPYING = "copying", "Copying"
        DONE = "done", "Copied"
        PARTIAL = "partial", "Partly copied"

    # Runflow's terminal states: never left once reached.
    TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})
    # Nothing will change without someone acting (resubmit, check again), so pages stop polling.
    FINAL_STATUSES = TERMINAL_STATUSES | {Status.NOT_SUBMITTED, Status.STALE}
    LOCAL_STATUSES = frozenset({Status.PENDING, Status.SUBMITTING})
    # Runflow bills every image it runs; failed runs and runs it never took are free.
    NOT_BILLED = frozenset({Status.FAILED, Status.CANCELED, Status.NOT_SUBMITTED})
    # The options of SAM 3's input schema, in the run form's order.
    OPTION_NAMES = schema.OPTION_NAMES
    # At the engine: sent, no result yet.
    AT_ENGINE = frozenset({Status.QUEUED, Status.DISPATCHING, Status.RUNNING})

    # A UUID, not a counter: it is also the Idempotency-Key and client_ref at Runflow, which
    # must never collide with another install's (or a reset database's) runs.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Which engine runs it (segmentation.engines): its name, not a foreign key.
    engine = models.CharField(max_length=20, default="runflow")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="runs"
    )
    image = models.ForeignKey(SourceImage, on_delete=models.PROTECT, related_name="runs")
    # The run this one was edited from ("Edit as a new run").
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    source_url = models.URLField(max_length=2000, blank=True)

    # What the person asked for: the model input minus image_url (resolved at submit time).
    input = models.JSONField()
    metadata = models.JSONField(null=True, blank=True)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    # The exact JSON body sent to the engine; an inline data: URI is kept as a short reference
    # (it is rebuilt byte for byte from the stored image): see without_inline_image() in
    # engines/runflow/engine.py.
    request_body = models.JSONField(null=True, blank=True)
    image_delivery = models.CharField(max_length=20, blank=True)  # url / inline / asset
    asset_url = models.CharField(max_length=2000, blank=True)
    provider_run_id = models.CharField(max_length=100, blank=True, db_index=True)
    provider_status = models.CharField(max_length=40, blank=True)
    provider_response = models.JSONField(null=True, blank=True)

    # Why Runflow refused, in Runflow's own words.
    error_http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    error_details = models.JSONField(null=True, blank=True)

    # Runflow's result, whoever brought it (callback or poll); `output` is kept verbatim.
    output = models.JSONField(null=True, blank=True)
    duration_ms = models.PositiveBigIntegerField(null=True, blank=True)
    cost = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failure_code = models.CharField(max_length=100, blank=True)
    failure_stage = models.CharField(max_length=100, blank=True)
    failure_message = models.TextField(blank=True)
    result_source = models.CharField(max_length=20, blank=True)  # callback / poll

    # Polling Runflow: when no callback can reach us, or as a safety net.
    poll_task_id = models.CharField(max_length=64, blank=True)
    poll_attempts = models.PositiveIntegerField(default=0)
    poll_deadline_at = models.DateTimeField(null=True, blank=True)

    # Our own copies of what Runflow made (its URLs expire).
    artifacts = models.CharField(
        max_length=10, choices=Artifacts.choices, default=Artifacts.NONE, blank=True
    )
    artifacts_task_id = models.CharField(max_length=64, blank=True)
    preview = models.FileField(upload_to="previews/%Y/%m/", blank=True)
    overlay = models.FileField(upload_to="overlays/%Y/%m/", blank=True)
    thumbnail = models.FileField(upload_to="thumbs/%Y/%m/", blank=True)
    artifact_notes = models.JSONField(default=list, blank=True)

    # The batch that made this run (segmentation.batches); a batch may also show runs it reused.
    batch = models.ForeignKey(
        "Batch", null=True, blank=True, on_delete=models.SET_NULL, related_name="made_runs"
    )
    # sha256 of the canonical JSON of `input`: with the image, what makes two runs the same
    # work (a batch reuses such a run instead of paying for it again).
    input_sha256 = models.CharField(max_length=64, blank=True, editable=False)

    # Copies of parts of `input` and of the result, kept in columns so the history page can
    # filter, search and sort a large table with indexes instead of reading JSON row by row.
    # The first PROMPT_INDEXED characters only: it sits in indexes, and PostgreSQL refuses
    # index entries over ~2.7 kB (SAM 3 concepts are short noun phrases anyway).
    prompt_text = models.CharField(max_length=PROMPT_INDEXED, blank=True, editable=False)
    point_count = models.PositiveSmallIntegerField(default=0, editable=False)
    box_count = models.PositiveSmallIntegerField(default=0, editable=False)
    mask_count = models.PositiveIntegerField(default=0, editable=False)

    # A read-only public link, made by the owner and revocable: NULL when there is none.
    share_token = models.CharField(max_length=64, null=True, blank=True, unique=True)
    shared_at = models.DateTimeField(null=True, blank=True)

    # The form's one-time key: a form submitted twice (Back and Submit, a double click, a
    # retried POST) makes one run, and the second answer leads to it.
    # An API run's Idempotency-Key lives here too ("api:" and its hash), beside the hash of
    # the body it came with (request_sha256: the same key with another body is refused).
    submission_key = models.CharField(max_length=100, blank=True, default="")
    request_sha256 = models.CharField(max_length=64, blank=True, editable=False)

    # Made through the API (sam3web's own /v1/): the token it came with, and what the caller
    # asked for besides the input. base_url: where the caller reached us, for the absolute
    # URLs of its output and callbacks (the worker sending them knows no request).
    token = models.ForeignKey(
        "accounts.ApiToken",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
    )
    client_ref = models.CharField(max_length=255, blank=True)
    callback_url = models.CharField(max_length=2000, blank=True)
    base_url = models.CharField(max_length=300, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    submit_attempts = models.PositiveIntegerField(default=0)
    # While a worker holds the run in SUBMITTING; past it, another worker may take over.
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # The history page pages by keyset (sort key, then id): each sort and the common
        # filters have an index that yields rows already in that order.
        # Filters are checked inside the first two indexes (they carry every filtered
        # column), so a rare filter or a prompt search scans a narrow index, not the wide rows.
        indexes = [
            models.Index(fields=["created_at", "id", "status", *FILTERED], name="run_created_idx"),
            models.Index(fields=["status", "created_at", "id", *FILTERED], name="run_status_idx"),
            models.Index(fields=["owner", "created_at", "id"], name="run_owner_idx"),
            models.Index(fields=["duration_ms", "id"], name="run_duration_idx"),
            models.Index(fields=["mask_count", "id"], name="run_masks_idx"),
            models.Index(fields=["owner", "duration_ms", "id"], name="run_owner_duration_idx"),
            models.Index(fields=["owner", "mask_count", "id"], name="run_owner_masks_idx"),
            # The usage page's aggregate (by teammate and by API token) reads only these
            # columns: the index covers it.
            models.Index(
                fields=["owner", "created_at", "status", "cost", "duration_ms", "token"],
                name="run_usage_idx",
            ),
            models.Index(fields=["image", "input_sha256"], name="run_same_work_idx"),
            models.Index(fields=["batch", "status"], name="run_batch_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "submission_key"],
                condition=~models.Q(submission_key=""),
                name="run_submission_unique",
            )
        ]

    def __str__(self) -> str:
        return f"Run {self.id} ({self.status})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.derive_columns()
        if kwargs.get("update_fields") is not None and "input" in kwargs["update_fields"]:
            kwargs["update_fields"] = {
                *kwargs["update_fields"],
                "prompt_text",
                "point_count",
                "box_count",
                "input_sha256",
            }
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("run_detail", args=[self.id])

    def derive_columns(self) -> None:
        """Fill the searchable copies of `input` (see prompt_text)."""
        data = self.input if isinstance(self.input, dict) else {}
        self.prompt_text = str(data.get("prompt") or "")[:PROMPT_INDEXED]
        self.point_count = len(data.get("point_prompts") or [])
        self.box_count = len(data.get("box_prompts") or [])
        self.input_sha256 = input_sha256(data)

    def can_manage(self, user: Any) -> bool:
        """The owner or an admin: may delete the run and make or revoke its public link.
        Every signed-in teammate may see it."""
        return bool(user.is_authenticated and (user.is_staff or user.pk == self.owner_id))

    def make_share_token(self) -> str:
        # 32 random bytes: unguessable, and not derived from anything an attacker could know.
        return secrets.token_urlsafe(32)

    @property
    def status_label(self) -> str:
        """The status for people, naming the engine where that says more ("Queued at
        Runflow"); the choices themselves are the same for every engine."""
        where = {
            self.Status.SUBMITTING: "Submitting to {}",
            self.Status.QUEUED: "Queued at {}",
        }.get(self.Status(self.status))
        if where is None:
            return str(self.get_status_display())
        return where.format(engines.get(self.engine).label)

    @property
    def via_api(self) -> bool:
        return self.token_id is not None

    @property
    def cost_shown(self) -> Decimal | None:
        """Runflow's figure once it has arrived; until then the list price (an estimate), for
        every run that is or will be billed; None for runs that are not billed."""
        if self.cost is not None:
            return self.cost
        if self.status in self.NOT_BILLED:
            return None
        return settings.SAM3WEB_PRICE_PER_IMAGE

    @property
    def cost_text(self) -> str:
        """The shown cost in dollars without trailing zeros ("$0.005"), or "" for none."""
        cost = self.cost_shown
        return "" if cost is None else f"${cost.normalize():f}"

    @property
    def cost_is_estimate(self) -> bool:
        return self.cost is None and self.cost_shown is not None

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def settled(self) -> bool:
        """Nothing on the run page will change by itself: the page can stop polling."""
        return self.is_final and self.artifacts not in (
            self.Artifacts.PENDING,
            self.Artifacts.COPYING,
        )

    @property
    def copying(self) -> bool:
        """The result is in and its masks are being copied into our storage."""
        return self.artifacts in (self.Artifacts.PENDING, self.Artifacts.COPYING)

    @property
    def elapsed_seconds(self) -> int:
        """Whole seconds since the run was made (the page shows it while the run is under way)."""
        return max(0, int((timezone.now() - self.created_at).total_seconds()))

    @property
    def waiting_too_long(self) -> bool:
        """Pending for longer than a running worker ever takes to pick a run up."""
        return (
            self.status == self.Status.PENDING
            and (timezone.now() - self.created_at).total_seconds() > 30
        )

    @property
    def status_version(self) -> str:
        """Changes whenever the status fragment would show something different."""
        parts = (
            # str(): a choice's member (a run just made) and its stored string are one version.
            str(self.status),
            self.submit_attempts,
            self.provider_status,
            self.error_message,
            self.waiting_too_long,
            str(self.artifacts),
            self.artifact_notes,
        )
        return hashlib.blake2s(repr(parts).encode(), digest_size=6).hexdigest()

    @property
    def can_resubmit(self) -> bool:
        return self.status == self.Status.NOT_SUBMITTED

    @property
    def prompt(self) -> str:
        return self.input.get("prompt", "")

    @property
    def points(self) -> list[dict[str, Any]]:
        return self.input.get("point_prompts") or []

    @property
    def boxes(self) -> list[dict[str, Any]]:
        return self.input.get("box_prompts") or []

    @property
    def submit_seconds(self) -> float | None:
        if self.submitted_at and self.created_at:
            return (self.submitted_at - self.created_at).total_seconds()
        return None


class Mask(models.Model):
    """One instance SAM 3 found: our copy of its mask, at the size of the image the person
    sees, with its score and pixel box. A mask that could not be copied keeps its row, with
    the reason, so nothing is silently dropped."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="masks")
    index = models.PositiveSmallIntegerField()  # position in Runflow's output
    file = models.FileField(upload_to="masks/%Y/%m/", blank=True)
    score = models.FloatField(null=True, blank=True)
    # Pixel box [x_min, y_min, x_max, y_max) in the image as the person sees it.
    x_min = models.IntegerField(null=True, blank=True)
    y_min = models.IntegerField(null=True, blank=True)
    x_max = models.IntegerField(null=True, blank=True)
    y_max = models.IntegerField(null=True, blank=True)
    area = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    copied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="mask_run_index_unique")
        ]

    def __str__(self) -> str:
        return f"Mask {self.index} of {self.run_id}"

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        if self.x_min is None or self.y_min is None or self.x_max is None or self.y_max is None:
            return None
        return (self.x_min, self.y_min, self.x_max, self.y_max)


class CallbackDelivery(models.Model):
    """Every callback POST that reached us, kept as it came, with what we made of it."""

    class Signature(models.TextChoices):
        VALID = "valid", "Valid signature"
        INVALID = "invalid", "Wrong signature"
        MISSING = "missing", "No signature"
        NOT_CHECKED = "not_checked", "No secret configured"

    class Outcome(models.TextChoices):
        APPLIED = "applied", "Applied"
        PROGRESS = "progress", "Progress noted"
        DUPLICATE = "duplicate", "Duplicate, ignored"
        LATE = "late", "After a final result, ignored"
        REJECTED = "rejected", "Rejected"

    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    received_at = models.DateTimeField(auto_now_add=True)
    request_id = models.CharField(max_length=200, blank=True)
    signature = models.CharField(max_length=20, choices=Signature.choices)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    http_status = models.PositiveSmallIntegerField()
    reason = models.TextField(blank=True)
    event = models.CharField(max_length=100, blank=True)
    provider_status = models.CharField(max_length=40, blank=True)
    # The raw body as received (decoded as UTF-8 with replacement), cut at a bound.
    body = models.TextField(blank=True)
    body_bytes = models.PositiveIntegerField(default=0)
    body_truncated = models.BooleanField(default=False)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["run", "-received_at"], name="delivery_run_idx")]

    def __str__(self) -> str:
        return f"Callback {self.request_id or self.pk} ({self.outcome})"


def charge() -> Case:
    """What a run counts against budgets, as a database expression (Run.cost_shown's rule):
    the list price from the moment it is accepted, Runflow's cost once that arrives, nothing
    once it failed or was never taken. Derived rather than stored, so no step of a run's life
    can forget to settle or refund it."""
    return Case(
        When(cost__isnull=False, then=F("cost")),
        When(status__in=sorted(Run.NOT_BILLED), then=Value(Decimal(0))),
        default=Value(settings.SAM3WEB_PRICE_PER_IMAGE),
        output_field=models.DecimalField(max_digits=12, decimal_places=6),
    )


class RemovedCharge(models.Model):
    """What a deleted run had cost: Runflow billed it all the same, so budgets keep counting it
    after its row is gone."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    token = models.ForeignKey(
        "accounts.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    run_created_at = models.DateTimeField()
    amount = models.DecimalField(max_digits=12, decimal_places=6)

    class Meta:
        indexes = [models.Index(fields=["owner", "run_created_at"], name="removed_owner_idx")]

    def __str__(self) -> str:
        return f"${self.amount} of a deleted run"


class CallerCallback(models.Model):
    """A callback sam3web sends to an API caller's callback_url when its run ends (Runflow's
    payload, signed with the teammate's secret), with every attempt to deliver it."""

    class State(models.TextChoices):
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Not delivered"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="caller_callbacks")
    # One automatic callback per final status the run reaches; "redelivery-…" for those a
    # caller asked for again.
    key = models.CharField(max_length=60)
    event = models.CharField(max_length=40)
    url = models.CharField(max_length=2000)
    request_id = models.CharField(max_length=64)
    # The exact bytes sent by every attempt (the signature is over them).
    body = models.TextField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.SENDING)
    # [{"at": ISO time, "http_status": int | None, "error": str, "ms": int}], oldest first.
    attempts = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "key"], name="caller_callback_unique")
        ]

    def __str__(self) -> str:
        return f"Callback {self.event} of {self.run_id} ({self.state})"


class Batch(models.Model):
    """A few concepts over many images: one run per image × concept, sent a few at a time,
    reviewed together and exported as one dataset (segmentation.batches does the work)."""

    class State(models.TextChoices):
        INTAKE = "intake", "Taking in images"
        READY = "ready", "Ready to start"
        RUNNING = "running", "Running"
        CANCELED = "canceled", "Canceled"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="batches"
    )
    name = models.CharField(max_length=200, blank=True)
    # The categories of the dataset, in order (category id = position + 1).
    concepts = models.JSONField(default=list)
    # SAM 3's options for every run, as schema.validate_input returns them (prompt left out).
    options = models.JSONField(default=dict)
    # "Run again anyway": send every image × concept even when the team already has its result.
    run_again = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.INTAKE)
    # A ZIP waiting to be taken in (removed once it has been).
    archive = models.FileField(upload_to="batch-uploads/%Y/%m/", blank=True)
    archive_name = models.CharField(max_length=255, blank=True)
    # The position of the archive's first entry among the items (files and URLs come first).
    archive_first = models.PositiveIntegerField(default=0)
    intake_total = models.PositiveIntegerField(default=0)
    intake_done = models.PositiveIntegerField(default=0)
    # Why the batch stopped short, for the person (a budget spent, a canceled intake...).
    message = models.TextField(blank=True)
    # Made from a run's page ("Same prompts on other images").
    source_run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return self.name or f"Batch {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("batch_detail", args=[self.pk])

    def category_id(self, concept: str) -> int:
        return self.concepts.index(concept) + 1

    def can_manage(self, user: Any) -> bool:
        """The owner or an admin may start, cancel and retry; every teammate may review."""
        return bool(user.is_authenticated and (user.is_staff or user.pk == self.owner_id))


class BatchItem(models.Model):
    """One file, archive entry or URL given to a batch, and what intake made of it."""

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting"
        ACCEPTED = "accepted", "Accepted"
        REFUSED = "refused", "Refused"
        DUPLICATE = "duplicate", "Duplicate"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=255)  # the file or entry name, or the URL, for people
    source_url = models.URLField(max_length=2000, blank=True)
    # An uploaded file waiting for intake (removed once taken in).
    upload = models.FileField(upload_to="batch-uploads/%Y/%m/", blank=True)
    image = models.ForeignKey(
        SourceImage, null=True, blank=True, on_delete=models.PROTECT, related_name="batch_items"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.WAITING)
    reason = models.TextField(blank=True)
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Rejected in review: left out of the dataset (undoable), by whom and when.
    rejected = models.BooleanField(default=False)
    rejected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rejected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "position"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "position"], name="batch_item_unique")
        ]
        indexes = [models.Index(fields=["batch", "state", "position"], name="batch_item_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"


class BatchRun(models.Model):
    """One image × concept of a batch, and the run that answers it: one the batch made, or
    one the team already had (reused: not paid for again). ``run`` is empty until the batch is
    started, and again when that run was deleted."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="cells")
    item = models.ForeignKey(BatchItem, on_delete=models.CASCADE, related_name="cells")
    concept = models.CharField(max_length=200)
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="batch_cells"
    )
    reused = models.BooleanField(default=False)

    class Meta:
        ordering = ["item__position", "id"]
        constraints = [models.UniqueConstraint(fields=["item", "concept"], name="batch_run_unique")]
        indexes = [models.Index(fields=["batch", "run"], name="batch_run_idx")]

    def __str__(self) -> str:
        return f"{self.item.name} × {self.concept}"


class Rejection(models.Model):
    """An instance a teammate marked as a false positive in a batch's review: kept out of its
    dataset, shown as rejected, and undone by deleting the row."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="rejections")
    mask = models.ForeignKey(Mask, on_delete=models.CASCADE, related_name="rejections")
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["batch", "mask"], name="rejection_unique")]

    def __str__(self) -> str:
        return f"Rejected {self.mask}"


class Dispatch(models.Model):
    """One row: the lock batch dispatch takes (so two workers never release more runs than
    the limit), and until when Runflow asked us to slow down (a 429's Retry-After)."""

    paused_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Dispatch (paused until {self.paused_until})"


class WorkerHeartbeat(models.Model):
    """One row per running worker process, refreshed every few seconds while it runs.

    A row not refreshed for SAM3WEB_WORKER_DEAD_AFTER seconds is a worker that died without
    saying so (SIGKILL, a lost machine): the workers still running hand its tasks back to the
    queue and delete the row. /healthz reads these rows to say whether anything is working."""

    worker_id = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)
    # The task it is running now, if any (django_tasks_db's DBTaskResult id).
    task_id = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"Worker {self.worker_id} on {self.hostname} (pid {self.pid})"


class Housekeeping(models.Model):
    """One row: when the workers next run `prune` (whichever worker first finds the time
    has come takes it, by moving the time on in one conditional update)."""

    next_prune_at = models.DateTimeField(null=True, blank=True)
    last_prune_at = models.DateTimeField(null=True, blank=True)
    last_prune_summary = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"Housekeeping (next prune {self.next_prune_at})"


class UsageMonth(models.Model):
    """The usage page's figures for one past month, kept so the page need not add up the
    whole history on every view (segmentation.usage): one entry in `rows` per (owner, API
    token), with Totals' fields. `month` and `ends` are the month's first instant and the
    next month's, in the time zone it was computed in (another zone's months are other rows).

    `rows` is NULL while the figures are not known (being computed, or out of date). Triggers
    on the runs table (migration 0008) set it back to NULL, and move `generation` on, whenever
    a run of the month is added, deleted, or changes in a way the figures count, whatever
    code does it; a view stores its figures only if `generation` did not move meanwhile."""

    month = models.DateTimeField()
    ends = models.DateTimeField()
    rows = models.JSONField(null=True, blank=True)
    generation = models.PositiveBigIntegerField(default=0)
    computed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["month", "ends"], name="usage_month_unique"),
        ]

    def __str__(self) -> str:
        return f"Usage of {self.month:%B %Y}"
