"""`manage.py prune`: removing what is safe to remove, and the workers' schedule for it.

What goes:
- staged images: images taken in by a form that was never sent (no run and no batch uses
  them) a day after they were stored, with their files;
- task rows: those of tasks finished (successful or failed) more than SAM3WEB_PRUNE_TASKS_AFTER
  days ago, and of tasks dead that long (still marked running, on no live worker);
- batch uploads no longer needed: the files of items already taken in or refused, and of
  canceled batches, that a stopped worker left behind;
- files no row names, in the folders the app's files live in, once they are an hour old (an
  upload in flight, or a file whose row is not committed yet, is never taken);
- exports kept in the bucket (``segmentation.stored_exports``) once they are an hour old: the
  signed link to one lives a few minutes.

Everything is found first and reported (a dry run); ``apply`` removes it. Rows go before their
files, so an interruption leaves at worst a file no row names, which the next prune takes."""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, models, transaction
from django.db.models import ProtectedError, Q
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from segmentation import stored_exports
from segmentation.models import (
    Batch,
    BatchItem,
    Housekeeping,
    Mask,
    Run,
    SourceImage,
    WorkerHeartbeat,
)

logger = logging.getLogger(__name__)

# A staged image is abandoned once its form has gone unsent this long.
STAGED_AFTER = dt.timedelta(days=1)
# A file no row names is left alone this long: its upload may be in flight, or its row not
# committed yet.
FILE_AFTER = dt.timedelta(hours=1)
# The app's files: (model, field) for every FileField; only their folders are walked.
FILE_FIELDS: list[tuple[type[models.Model], str]] = [
    (SourceImage, "file"),
    (SourceImage, "thumbnail"),
    (SourceImage, "display"),
    (Run, "preview"),
    (Run, "overlay"),
    (Run, "thumbnail"),
    (Mask, "file"),
    (Batch, "archive"),
    (BatchItem, "upload"),
]
CHUNK = 500


@dataclass
class Found:
    count: int = 0
    bytes: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, name: str, size: int = 0) -> None:
        self.count += 1
        self.bytes += size
        if len(self.examples) < 5:
            self.examples.append(name)


@dataclass
class Summary:
    applied: bool
    staged_images: Found = field(default_factory=Found)
    task_rows: Found = field(default_factory=Found)
    batch_uploads: Found = field(default_factory=Found)
    unnamed_files: Found = field(default_factory=Found)
    old_exports: Found = field(default_factory=Found)

    def as_dict(self) -> dict[str, Any]:
        parts = ("staged_images", "task_rows", "batch_uploads", "unnamed_files", "old_exports")
        return {
            "applied": self.applied,
            **{
                name: {"count": getattr(self, name).count, "bytes": getattr(self, name).bytes}
                for name in parts
            },
        }

    def lines(self) -> Iterator[str]:
        verb = "Removed" if self.applied else "Would remove"
        rows = [
            ("staged images of forms never sent", self.staged_images),
            ("task rows of finished or dead tasks", self.task_rows),
            ("batch uploads no longer needed", self.batch_uploads),
            ("files no row names", self.unnamed_files),
            ("downloaded exports", self.old_exports),
        ]
        for label, found in rows:
            yield f"{verb} {found.count} {label} ({found.bytes} bytes)"
            for example in found.examples:
                yield f"    {example}"


def prune(*, apply: bool = False, now: dt.datetime | None = None) -> Summary:
    now = now or timezone.now()
    summary = Summary(applied=apply)
    _staged_images(summary.staged_images, now, apply)
    _task_rows(summary.task_rows, now, apply)
    _batch_uploads(summary.batch_uploads, now, apply)
    _unnamed_files(summary.unnamed_files, now, apply)
    _old_exports(summary.old_exports, now, apply)
    return summary


def _size(name: str) -> int:
    try:
        return default_storage.size(name)
    except (OSError, NotImplementedError):
        return 0


def _remove(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("prune could not remove %s", name, exc_info=True)


def _named_elsewhere(name: str) -> bool:
    """Whether some row still names this file (rows may share files)."""
    return any(
        model._default_manager.filter(**{attr: name}).exists() for model, attr in FILE_FIELDS
    )


# --- staged images ------------------------------------------------------------------------------


def _staged_images(found: Found, now: dt.datetime, apply: bool) -> None:
    unused = SourceImage.objects.filter(
        created_at__lt=now - STAGED_AFTER, runs__isnull=True, batch_items__isnull=True
    )
    for image in unused.iterator(chunk_size=CHUNK):
        names = [f.name for f in (image.file, image.thumbnail, image.display) if f.name]
        size = sum(_size(name) for name in names)
        if not apply:
            found.add(image.original_name or image.sha256[:12], size)
            continue
        try:
            with transaction.atomic():
                image.delete()
        except (ProtectedError, IntegrityError):
            continue  # a run was made with it a moment ago: it is in use after all
        found.add(image.original_name or image.sha256[:12], size)
        _remove([name for name in names if not _named_elsewhere(name)])


# --- task rows ----------------------------------------------------------------------------------


def _task_rows(found: Found, now: dt.datetime, apply: bool) -> None:
    before = now - dt.timedelta(days=settings.SAM3WEB_PRUNE_TASKS_AFTER)
    finished = Q(status__in=["SUCCESSFUL", "FAILED"], finished_at__lt=before)
    # Marked running for days, by no worker alive: its worker died and nothing took it over.
    running_now = WorkerHeartbeat.objects.exclude(task_id="").values_list("task_id", flat=True)
    dead = Q(status="RUNNING", started_at__lt=before) & ~Q(pk__in=[*running_now])
    rows = DBTaskResult.objects.filter(finished | dead)
    while True:
        ids = list(rows.values_list("pk", flat=True)[:CHUNK])
        if not ids:
            return
        for pk in ids:
            found.add(str(pk))
        if not apply:
            # Only counted: the rest in one query.
            found.count += max(0, rows.count() - len(ids))
            return
        DBTaskResult.objects.filter(pk__in=ids).delete()


# --- batch uploads ------------------------------------------------------------------------------


def _batch_uploads(found: Found, now: dt.datetime, apply: bool) -> None:
    old = now - FILE_AFTER
    items = (
        BatchItem.objects.exclude(upload="")
        .filter(batch__created_at__lt=old)
        .filter(~Q(state=BatchItem.State.WAITING) | Q(batch__state=Batch.State.CANCELED))
    )
    _drop_files(items, "upload", found, apply)
    batches = Batch.objects.exclude(archive="").filter(
        created_at__lt=old, state=Batch.State.CANCELED
    )
    _drop_files(batches, "archive", found, apply)


def _drop_files(rows: Any, attr: str, found: Found, apply: bool) -> None:
    """Each row's file in ``attr``: counted, and when applying, unnamed (one conditional
    update, so a row changed meanwhile keeps its file) and removed unless another row names
    it."""
    for row in rows.only("pk", attr).iterator(chunk_size=CHUNK):
        name = getattr(row, attr).name or ""
        size = _size(name)
        if apply:
            if not type(row).objects.filter(pk=row.pk, **{attr: name}).update(**{attr: ""}):
                continue
            if not _named_elsewhere(name):
                _remove([name])
        found.add(name, size)


# --- files no row names ---------------------------------------------------------------------------


def _folders() -> dict[str, list[tuple[type[models.Model], str]]]:
    """Each top folder the app's files live in (from the fields' upload_to), with the fields
    whose files are kept there."""
    folders: dict[str, list[tuple[type[models.Model], str]]] = {}
    for model, attr in FILE_FIELDS:
        upload_to = model._meta.get_field(attr).upload_to  # type: ignore[union-attr]
        top = str(upload_to).split("/", 1)[0]
        folders.setdefault(top, []).append((model, attr))
    return folders


def _walk(folder: str) -> Iterator[tuple[str, list[str]]]:
    """Each folder under ``folder`` (itself included) with the files directly in it."""
    try:
        dirs, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    yield folder, files
    for sub in sorted(dirs):
        yield from _walk(posixpath.join(folder, sub))


def _unnamed_files(found: Found, now: dt.datetime, apply: bool) -> None:
    old = now - FILE_AFTER
    for top, fields in _folders().items():
        for folder, files in _walk(top):
            if not files:
                continue
            prefix = folder + "/"
            # One folder at a time (a month of one kind of file): what its rows name, read once.
            named: set[str] = set()
            for model, attr in fields:
                named.update(
                    model._default_manager.filter(**{f"{attr}__startswith": prefix}).values_list(
                        attr, flat=True
                    )
                )
            for file in sorted(files):
                name = prefix + file
                if name in named:
                    continue
                try:
                    modified = default_storage.get_modified_time(name)
                except (OSError, NotImplementedError):
                    continue
                if modified >= old:
                    continue
                size = _size(name)
                if apply:
                    if _named_elsewhere(name):  # named since the folder was read
                        continue
                    _remove([name])
                found.add(name, size)


# --- exports ------------------------------------------------------------------------------------


def _old_exports(found: Found, now: dt.datetime, apply: bool) -> None:
    before = now - stored_exports.EXPORTS_KEPT
    for folder, files in list(_walk(stored_exports.FOLDER)):
        for file in files:
            name = posixpath.join(folder, file)
            try:
                if default_storage.get_modified_time(name) >= before:
                    continue
            except (OSError, NotImplementedError):
                continue
            size = _size(name)
            if apply:
                _remove([name])
            found.add(name, size)


# --- the workers' schedule ------------------------------------------------------------------------


def prune_if_due() -> Summary | None:
    """Prune (applying) when the schedule says it is time; the worker calls this when idle,
    so when it is not time it costs one indexed read of one row.

    Whichever worker first moves next_prune_at on, in one conditional update, is the one that
    prunes; the others find the time already moved."""
    interval = settings.SAM3WEB_PRUNE_INTERVAL
    if interval <= 0:
        return None
    now = timezone.now()
    later = now + dt.timedelta(seconds=interval)
    row = Housekeeping.objects.order_by("pk").only("pk", "next_prune_at").first()
    if row is None:
        # A new install: nothing is old enough to prune yet; the first prune is one interval on.
        Housekeeping.objects.get_or_create(pk=1, defaults={"next_prune_at": later})
        return None
    if row.next_prune_at is not None and row.next_prune_at > now:
        return None
    claimed = (
        Housekeeping.objects.filter(pk=row.pk)
        .filter(Q(next_prune_at__isnull=True) | Q(next_prune_at__lte=now))
        .update(next_prune_at=later)
    )
    if not claimed:
        return None
    summary = prune(apply=True, now=now)
    Housekeeping.objects.filter(pk=row.pk).update(
        last_prune_at=now, last_prune_summary=summary.as_dict()
    )
    logger.info("prune %s", " ".join(f"{k}={v}" for k, v in summary.as_dict().items()))
    return summary
