"""Batches through the service and the real worker, against the Runflow stand-in: intake,
the preview's cost, never paying twice, dispatch within the limit, a 429 slowing everything
instead of failing runs, cancel and retry, and a worker killed in the middle of a batch."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django_tasks_db.models import DBTaskResult

from accounts import budgets
from accounts.models import Profile
from segmentation import batches
from segmentation.models import Batch, BatchItem, Dispatch, Run
from tests.factories import (
    OPTIONS,
    drain,
    image_bytes,
    make_run,
    png_bytes,
    run_worker,
    submit,
    wait_for,
    worker_env,
    worker_until_idle,
)
from tests.sample_images import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

CONCEPTS = ["cat", "ear"]


def files(*names_and_bytes: tuple[str, bytes]) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(name, data) for name, data in names_and_bytes]


def colours(n: int) -> list[SimpleUploadedFile]:
    """``n`` different small images."""
    return files(*((f"{i}.png", png_bytes(40 + i, 30, (i * 7 % 256, 90, 200))) for i in range(n)))


def taken_in(owner: Any, **kwargs: Any) -> Batch:
    kwargs.setdefault("concepts", CONCEPTS)
    kwargs.setdefault("options", OPTIONS)
    batch = batches.create_batch(owner=owner, **kwargs)
    run_worker()
    batch.refresh_from_db()
    assert batch.state == Batch.State.READY
    return batch


def made(batch: Batch) -> None:
    """Start the batch and make its runs (the start task), without sending any."""
    assert batches.start(batch)
    batches.start_batch.call(batch.pk)
    batch.refresh_from_db()


def statuses(batch: Batch) -> list[str]:
    return sorted(batch.made_runs.values_list("status", flat=True))


def test_intake_keeps_the_good_images_lists_the_bad_and_takes_a_duplicate_once(owner) -> None:
    staged = Path(settings.MEDIA_ROOT, "batch-uploads")
    batch = batches.create_batch(
        owner=owner,
        concepts=CONCEPTS,
        options=OPTIONS,
        files=files(
            ("cat.jpg", image_bytes("cat.jpg")),
            ("notes.txt", b"not an image at all"),
            ("copy of cat.jpg", image_bytes("cat.jpg")),
            ("coins.png", image_bytes("coins.png")),
        ),
    )
    assert len([p for p in staged.rglob("*") if p.is_file()]) == 4  # kept until taken in
    run_worker()
    batch.refresh_from_db()
    items = {item.name: item for item in batch.items.all()}
    assert items["cat.jpg"].state == BatchItem.State.ACCEPTED
    assert items["coins.png"].state == BatchItem.State.ACCEPTED
    assert items["notes.txt"].state == BatchItem.State.REFUSED
    assert "not an image" in items["notes.txt"].reason
    assert items["copy of cat.jpg"].state == BatchItem.State.DUPLICATE
    assert items["copy of cat.jpg"].duplicate_of == items["cat.jpg"]
    assert (batch.intake_done, batch.intake_total) == (4, 4)
    # The staged uploads are gone once taken in.
    assert not any(item.upload for item in batch.items.all())
    assert [p for p in staged.rglob("*") if p.is_file()] == []


def test_the_preview_costs_images_times_concepts_less_what_the_team_already_has(
    owner, teammate, settings
) -> None:
    batch = taken_in(owner, files=colours(3))
    shown = batches.preview(batch)
    assert (shown.images, shown.runs, shown.reused, shown.to_send) == (3, 6, 0, 6)
    assert shown.cost == settings.SAM3WEB_PRICE_PER_IMAGE * 6

    # A teammate already ran "cat" with the same options on the first image.
    first = batch.items.get(position=0).image
    assert first is not None
    make_run(teammate, image=first, input=batches.run_input("cat", OPTIONS))
    shown = batches.preview(batch)
    assert (shown.reused, shown.to_send) == (1, 5)
    # Other options are other work.
    other = {**OPTIONS, "max_masks": 7}
    second = batch.items.get(position=1).image
    assert second is not None
    make_run(teammate, image=second, input=batches.run_input("ear", other))
    assert batches.preview(batch).reused == 1


def test_a_batch_over_the_budget_is_not_started(owner, settings) -> None:
    Profile.objects.update_or_create(user=owner, defaults={"monthly_budget": Decimal("0.01")})
    batch = taken_in(owner, files=colours(2))  # 4 runs at $0.005
    assert "budget" in batches.preview(batch).refusal
    with pytest.raises(budgets.BudgetExceeded):
        batches.start(batch)
    batch.refresh_from_db()
    assert batch.state == Batch.State.READY and not batch.cells.exists()


def test_start_pressed_twice_makes_one_run_per_image_and_concept(owner) -> None:
    batch = taken_in(owner, files=colours(2))
    assert batches.start(batch) is True
    assert batches.start(Batch.objects.get(pk=batch.pk)) is False
    batches.start_batch.call(batch.pk)
    batches.start_batch.call(batch.pk)  # a second start task (a recovery) makes nothing more
    assert batch.cells.count() == 4
    assert statuses(batch) == [Run.Status.WAITING] * 4
    assert sorted(batch.made_runs.values_list("prompt_text", flat=True)) == [
        "cat",
        "cat",
        "ear",
        "ear",
    ]


def test_dispatch_keeps_at_most_the_limit_at_runflow_across_batches(owner, settings) -> None:
    settings.SAM3WEB_BATCH_CONCURRENCY = 3
    first = taken_in(owner, files=colours(2))
    second = taken_in(owner, files=colours(3)[2:])
    made(first)
    made(second)
    assert batches.dispatch() == 3
    assert batches.dispatch() == 0  # no free slot
    # The oldest batch goes first.
    assert statuses(first) == [Run.Status.PENDING] * 3 + [Run.Status.WAITING]
    assert statuses(second) == [Run.Status.WAITING] * 2
    # A run leaving Runflow frees its slot.
    Run.objects.filter(batch=first, status=Run.Status.PENDING).filter(
        pk=Run.objects.filter(batch=first, status=Run.Status.PENDING).values("pk")[:1]
    ).update(status=Run.Status.SUCCEEDED)
    assert batches.dispatch() == 1
    assert statuses(first).count(Run.Status.WAITING) == 0


def test_a_whole_batch_runs_through_the_worker_and_runflow_sees_each_run_once(
    owner, standin, fast_polling, settings
) -> None:
    settings.SAM3WEB_BATCH_CONCURRENCY = 2
    standin.complete_after = 0.05
    batch = taken_in(owner, files=colours(3))
    assert batches.start(batch)
    drain(lambda: batches.progress(batch).complete, timeout=60)
    shown = batches.progress(batch)
    assert (shown.total, shown.done, shown.failed, shown.waiting) == (6, 6, 0, 0)
    refs = [r.json["client_ref"] for r in standin.create_calls()]
    assert sorted(refs) == sorted(str(pk) for pk in batch.made_runs.values_list("pk", flat=True))


def test_a_run_from_the_form_is_sent_before_a_queued_batch(owner, signed_in, standin) -> None:
    batch = taken_in(owner, files=colours(3))
    made(batch)
    batches.dispatch()
    form_run = submit(signed_in)
    # One task: the form's submit goes first, ahead of the batch's queued ones.
    call_command(
        "db_worker", "--batch", "--no-startup-delay", "--interval", "0", "--max-tasks", "1"
    )
    assert Run.objects.get(pk=form_run.pk).status != Run.Status.PENDING
    assert set(statuses(batch)) <= {Run.Status.PENDING, Run.Status.WAITING}


def test_a_429_pauses_dispatch_for_retry_after_and_fails_no_run(
    owner, standin, fast_polling, settings
) -> None:
    settings.RUNFLOW_MAX_ATTEMPTS = 2
    settings.SAM3WEB_BATCH_CONCURRENCY = 1
    standin.complete_after = 0.05
    standin.rate_limit_next = 2  # both attempts of the first submit
    standin.retry_after = "1"
    batch = taken_in(owner, files=colours(2))
    made(batch)
    batches.dispatch()
    began = time.monotonic()
    run_worker()  # the first submit: 429 twice, so the run waits again
    assert Run.Status.NOT_SUBMITTED not in statuses(batch)
    paused = Dispatch.objects.get(pk=1).paused_until
    assert paused is not None
    assert batches.dispatch() == 0  # paused: nothing goes
    drain(lambda: batches.progress(batch).complete, timeout=60)
    assert time.monotonic() - began >= 0.9  # Retry-After was honoured
    assert statuses(batch) == [Run.Status.SUCCEEDED] * 4


def test_cancel_stops_what_was_not_sent_and_retry_sends_it(owner, standin, fast_polling) -> None:
    standin.complete_after = 0.05
    batch = taken_in(owner, files=colours(3))
    made(batch)
    batches.dispatch()  # the default limit: 6 runs, all released
    Run.objects.filter(
        pk__in=Run.objects.filter(batch=batch, status=Run.Status.PENDING).values("pk")[:4]
    ).update(status=Run.Status.WAITING)  # as if only two had been released
    assert batches.cancel(batch) == 4
    assert batches.cancel(Batch.objects.get(pk=batch.pk)) is None  # pressed twice
    drain(lambda: not batch.made_runs.exclude(status__in=Run.FINAL_STATUSES).exists())
    shown = batches.progress(batch)
    assert (shown.done, shown.canceled) == (2, 4)
    assert len(standin.create_calls()) == 2

    assert batches.retry_failed(Batch.objects.get(pk=batch.pk)) == 4
    drain(lambda: batches.progress(batch).complete, timeout=60)
    shown = batches.progress(batch)
    assert (shown.done, shown.canceled, shown.failed) == (6, 0, 0)
    assert len(standin.create_calls()) == 6


def test_cancel_during_intake_stops_taking_images_in(owner) -> None:
    batch = batches.create_batch(owner=owner, concepts=CONCEPTS, options=OPTIONS, files=colours(3))
    assert batches.cancel(batch) == 0
    run_worker()
    batch.refresh_from_db()
    assert batch.state == Batch.State.CANCELED
    assert set(batch.items.values_list("state", flat=True)) == {BatchItem.State.REFUSED}
    assert not any(batch.items.values_list("upload", flat=True))
    with pytest.raises(batches.BatchError):
        batches.start(batch)


def test_two_teammates_running_the_same_folder_pay_once(
    owner, teammate, standin, fast_polling
) -> None:
    standin.complete_after = 0.05
    mine = taken_in(owner, files=colours(2))
    assert batches.start(mine)
    drain(lambda: batches.progress(mine).complete, timeout=60)
    theirs = taken_in(teammate, files=colours(2), concepts=[*CONCEPTS, "whisker"])
    assert batches.preview(theirs).to_send == 2  # only the new concept
    assert batches.start(theirs)
    drain(lambda: batches.progress(theirs).complete, timeout=60)
    assert len(standin.create_calls()) == 6
    reused = theirs.cells.filter(reused=True)
    assert reused.count() == 4
    assert set(reused.values_list("run__batch", flat=True)) == {mine.pk}
    assert batches.progress(theirs).cost == batches.progress(mine).cost / 2

    # "Run again anyway" pays again.
    again = taken_in(teammate, files=colours(1), run_again=True)
    assert batches.preview(again).to_send == 2


def test_a_worker_killed_mid_batch_still_sends_each_run_once(owner, standin, settings) -> None:
    standin.complete_after = 0.05
    standin.create_delay = 0.3  # a slow answer: the kill lands mid-send
    batch = taken_in(owner, files=colours(4))
    assert batches.start(batch)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "worker", "--", "--no-startup-delay"],
        cwd=ROOT,
        env=worker_env(standin, SAM3WEB_SUBMIT_LEASE="1", SAM3WEB_POLL_FIRST="0.05"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(standin.create_calls()) >= 2, timeout=60)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    time.sleep(1.1)  # the killed worker's submit leases run out
    standin.create_delay = 0
    for _ in range(40):
        worker_until_idle(standin, SAM3WEB_POLL_FIRST="0.05")
        if batches.progress(batch).complete:
            break
        time.sleep(0.2)
    shown = batches.progress(batch)
    assert (shown.done, shown.total) == (8, 8)
    for run in batch.made_runs.all():
        assert len(standin.runs_for_client_ref(str(run.pk))) == 1
    assert not DBTaskResult.objects.filter(status="FAILED").exists()


def test_same_prompts_on_other_images_makes_a_small_batch_of_the_runs(
    owner, signed_in, standin, fast_polling
) -> None:
    standin.complete_after = 0.05
    source = make_run(owner, input=batches.run_input("cat", {**OPTIONS, "max_masks": 5}))
    response = signed_in.post(
        f"/runs/{source.pk}/reuse/",
        {
            "images": [
                SimpleUploadedFile("a.png", png_bytes(50, 40)),
                SimpleUploadedFile("b.png", png_bytes(60, 40, (1, 2, 3))),
            ]
        },
        follow=True,
    )
    assert response.status_code == 200
    batch = Batch.objects.get(source_run=source)
    assert f'href="/batches/{batch.pk}/"' in response.content.decode()
    assert batch.concepts == ["cat"] and batch.options["max_masks"] == 5
    assert list(batch.items.values_list("name", flat=True)) == ["a.png", "b.png"]
    made_here = set(batch.cells.values_list("run", flat=True))
    assert made_here == set(Run.objects.filter(parent=source).values_list("pk", flat=True))
    drain(lambda: batches.progress(batch).complete, timeout=60)
    assert batches.progress(batch).done == 2


def test_a_starting_worker_carries_on_with_batches_without_queueing_them_twice(owner) -> None:
    batch = batches.create_batch(owner=owner, concepts=CONCEPTS, options=OPTIONS, files=colours(2))
    assert batches.recover(sender=None) == 0  # its intake is queued already
    DBTaskResult.objects.filter(task_path=batches.intake_batch.module_path).delete()
    assert batches.recover(sender=None) == 1  # a worker died with it: queued again
    run_worker()
    batch.refresh_from_db()
    assert batch.state == Batch.State.READY
    assert batch.items.filter(state=BatchItem.State.ACCEPTED).count() == 2


def zipped(entries: dict[str, bytes]) -> SimpleUploadedFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return SimpleUploadedFile("site photos.zip", buf.getvalue())


def test_a_zip_is_taken_in_entry_by_entry_and_its_bad_entries_are_listed(owner, tmp_path) -> None:
    inner = zipped({"x.png": png_bytes(10, 10)}).read()
    batch = taken_in(
        owner,
        files=colours(1),
        urls=[],
        archive=zipped(
            {
                "site/a.png": png_bytes(31, 20),
                "site/readme.txt": b"hello",
                "../evil.png": png_bytes(32, 20),
                "site/nested.zip": inner,
                "site/again.png": png_bytes(31, 20),
                "__MACOSX/site/._a.png": b"junk",
            }
        ),
    )
    items = {item.name: item for item in batch.items.all()}
    prefix = "site photos.zip: "
    assert items[prefix + "site/a.png"].state == BatchItem.State.ACCEPTED
    assert items[prefix + "site/readme.txt"].state == BatchItem.State.REFUSED
    assert items[prefix + "../evil.png"].state == BatchItem.State.REFUSED
    assert items[prefix + "site/nested.zip"].state == BatchItem.State.REFUSED
    assert items[prefix + "site/again.png"].state == BatchItem.State.DUPLICATE
    assert not any("MACOSX" in name for name in items)
    assert list(batch.items.order_by("position").values_list("position", flat=True)) == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]
    assert batch.intake_done == batch.intake_total
    assert not batch.archive
    # Nothing was written under an entry's name.
    media = Path(settings.MEDIA_ROOT)
    assert not list(media.parent.glob("evil*")) and not list(media.rglob("evil*"))


def test_an_archive_that_is_not_a_zip_is_listed_as_refused(owner) -> None:
    batch = taken_in(
        owner, files=colours(1), archive=SimpleUploadedFile("photos.zip", png_bytes(20, 20))
    )
    refused = batch.items.get(state=BatchItem.State.REFUSED)
    assert refused.name == "photos.zip"
    assert "ZIP" in refused.reason
