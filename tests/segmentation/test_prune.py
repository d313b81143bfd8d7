"""`manage.py prune`: what it removes and what it leaves, on real files in the test's media
folder; a dry run by default; and the workers' schedule (one worker prunes, the rest find it
done)."""

from __future__ import annotations

import datetime as dt
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from segmentation import tasks
from segmentation.models import Batch, BatchItem, Housekeeping, Run, SourceImage
from segmentation.prune import prune, prune_if_due
from tests.factories import finished_run, make_run, png_bytes, stored_image

pytestmark = pytest.mark.django_db(transaction=True)


def media(settings: Any, name: str | None) -> Path:
    assert name
    return Path(settings.MEDIA_ROOT) / name


def age(path: Path, hours: float) -> None:
    when = time.time() - hours * 3600
    os.utime(path, (when, when))


def backdate(model: Any, pk: Any, days: float, field: str = "created_at") -> None:
    model.objects.filter(pk=pk).update(**{field: timezone.now() - dt.timedelta(days=days)})


def run_command(*args: str) -> str:
    out = io.StringIO()
    call_command("prune", *args, stdout=out)
    return out.getvalue()


def test_a_staged_image_of_a_form_never_sent_goes_after_a_day(settings: Any, owner: Any) -> None:
    abandoned = stored_image("cat.jpg")
    backdate(SourceImage, abandoned.pk, 2)
    files = [media(settings, f.name) for f in (abandoned.file, abandoned.thumbnail) if f.name]
    assert files and all(f.exists() for f in files)
    fresh = stored_image("coins.png")  # a form being filled in right now
    # Old, but a run uses it.
    used = make_run(owner, image=stored_image("coins.png", data=png_bytes(40, 30)))
    backdate(SourceImage, used.image_id, 30)

    out = run_command()
    assert "Would remove 1 staged images of forms never sent" in out
    assert "cat.jpg" in out and "dry run" in out
    assert SourceImage.objects.filter(pk=abandoned.pk).exists()
    assert all(f.exists() for f in files)

    out = run_command("--apply")
    assert "Removed 1 staged images of forms never sent" in out
    assert not SourceImage.objects.filter(pk=abandoned.pk).exists()
    assert not any(f.exists() for f in files)
    assert set(SourceImage.objects.values_list("pk", flat=True)) == {fresh.pk, used.image_id}
    assert media(settings, used.image.file.name).exists()


def test_the_bytes_are_counted(settings: Any) -> None:
    image = stored_image("cat.jpg")
    backdate(SourceImage, image.pk, 2)
    expected = sum(
        media(settings, f.name).stat().st_size for f in (image.file, image.thumbnail) if f.name
    )
    assert prune().staged_images.bytes == expected


def test_old_finished_task_rows_go_and_waiting_ones_stay(settings: Any, owner: Any) -> None:
    settings.SAM3WEB_PRUNE_TASKS_AFTER = 7
    run = make_run(owner, status=Run.Status.PENDING)
    old_done, recent_done, old_failed, waiting, dead, running = (
        tasks.submit_run.enqueue(str(run.pk)).id for _ in range(6)
    )
    ago = timezone.now() - dt.timedelta(days=8)
    DBTaskResult.objects.filter(pk__in=[old_done, recent_done]).update(
        status="SUCCESSFUL", finished_at=ago
    )
    DBTaskResult.objects.filter(pk=recent_done).update(finished_at=timezone.now())
    DBTaskResult.objects.filter(pk=old_failed).update(status="FAILED", finished_at=ago)
    DBTaskResult.objects.filter(pk__in=[dead, running]).update(status="RUNNING", started_at=ago)
    DBTaskResult.objects.filter(pk=running).update(started_at=timezone.now())

    assert prune().task_rows.count == 3
    assert DBTaskResult.objects.count() == 6
    assert prune(apply=True).task_rows.count == 3
    assert {str(pk) for pk in DBTaskResult.objects.values_list("pk", flat=True)} == {
        str(recent_done),
        str(waiting),
        str(running),
    }


def test_files_no_row_names_go_once_an_hour_old(settings: Any, owner: Any) -> None:
    run = finished_run(owner, masks=1)
    named = media(settings, run.masks.get().file.name)
    age(named, 5)
    folder = named.parent
    stray = folder / "left-behind.png"
    stray.write_bytes(png_bytes(4, 4))
    age(stray, 2)
    in_flight = folder / "uploading.png"
    in_flight.write_bytes(png_bytes(4, 4))
    deeper = media(settings, "images/2001/01/orphan.jpg")
    deeper.parent.mkdir(parents=True)
    deeper.write_bytes(b"x" * 100)
    age(deeper, 24)
    not_ours = media(settings, "elsewhere/old.bin")  # a folder the app keeps no files in
    not_ours.parent.mkdir(parents=True)
    not_ours.write_bytes(b"y")
    age(not_ours, 24)

    found = prune().unnamed_files
    assert found.count == 2 and found.bytes == stray.stat().st_size + 100
    assert stray.exists() and deeper.exists()

    assert prune(apply=True).unnamed_files.count == 2
    assert not stray.exists() and not deeper.exists()
    assert named.exists() and in_flight.exists() and not_ours.exists()
    Run.objects.get(pk=run.pk)  # untouched


def test_batch_uploads_left_behind_go(settings: Any, owner: Any) -> None:
    batch = Batch.objects.create(owner=owner, concepts=["cat"])
    taken = BatchItem(batch=batch, position=0, name="a.png", state=BatchItem.State.ACCEPTED)
    taken.upload.save("a.png", ContentFile(png_bytes(8, 8)), save=False)
    taken.save()
    waiting = BatchItem(batch=batch, position=1, name="b.png")
    waiting.upload.save("b.png", ContentFile(png_bytes(8, 8)), save=False)
    waiting.save()
    backdate(Batch, batch.pk, 1)
    leftover, needed = media(settings, taken.upload.name), media(settings, waiting.upload.name)

    assert prune().batch_uploads.count == 1
    assert prune(apply=True).batch_uploads.count == 1
    assert not leftover.exists() and needed.exists()
    taken.refresh_from_db()
    assert taken.upload.name == ""
    waiting.refresh_from_db()
    assert waiting.upload.name

    Batch.objects.filter(pk=batch.pk).update(state=Batch.State.CANCELED)
    assert prune(apply=True).batch_uploads.count == 1
    assert not needed.exists()


def test_the_schedule_prunes_once_per_interval(
    settings: Any, django_assert_max_num_queries: Any
) -> None:
    settings.SAM3WEB_PRUNE_INTERVAL = 3600
    image = stored_image("cat.jpg")
    backdate(SourceImage, image.pk, 2)
    # A new install: the first prune is one interval on.
    assert prune_if_due() is None
    row = Housekeeping.objects.get()
    assert row.next_prune_at is not None and row.next_prune_at > timezone.now()
    # Not due: one small read.
    with django_assert_max_num_queries(1):
        assert prune_if_due() is None
    assert SourceImage.objects.filter(pk=image.pk).exists()

    Housekeeping.objects.update(next_prune_at=timezone.now() - dt.timedelta(seconds=1))
    summary = prune_if_due()
    assert summary is not None and summary.applied and summary.staged_images.count == 1
    assert not SourceImage.objects.filter(pk=image.pk).exists()
    row = Housekeeping.objects.get()
    assert row.last_prune_summary["staged_images"]["count"] == 1
    assert row.next_prune_at is not None
    assert row.next_prune_at > timezone.now() + dt.timedelta(seconds=3500)
    # Another worker looking a moment later finds it done.
    assert prune_if_due() is None


def test_only_one_of_two_workers_takes_the_prune(settings: Any) -> None:
    settings.SAM3WEB_PRUNE_INTERVAL = 60
    past = timezone.now() - dt.timedelta(seconds=5)
    Housekeeping.objects.create(next_prune_at=past)
    import threading

    from django.db import connection

    results: list[Any] = []

    def worker() -> None:
        try:
            results.append(prune_if_due())
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r is None for r in results) == [False, True]


def test_an_interval_of_zero_turns_it_off(settings: Any) -> None:
    settings.SAM3WEB_PRUNE_INTERVAL = 0
    Housekeeping.objects.create(next_prune_at=timezone.now() - dt.timedelta(days=1))
    assert prune_if_due() is None
    assert Housekeeping.objects.get().last_prune_at is None
