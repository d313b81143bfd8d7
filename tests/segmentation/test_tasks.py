"""One local run never makes two provider runs, even when the worker dies mid-call."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone

from segmentation.engines.runflow.client import RunflowClient
from segmentation.models import Run
from tests.factories import TEST_KEY, submit, wait_for, worker_env, worker_until_idle
from tests.sample_images import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_killed_mid_call_leaves_one_provider_run(signed_in, standin) -> None:
    # Runflow records the run, then holds its answer: the worker is killed while waiting.
    standin.create_delay = 5.0
    run = submit(signed_in)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "worker", "--", "--no-startup-delay", "--interval", "0.1"],
        cwd=ROOT,
        env=worker_env(standin),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(standin.create_calls()) == 1)
        wait_for(lambda: len(standin.runs_for_client_ref(str(run.id))) == 1)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    run.refresh_from_db()
    assert run.status == Run.Status.SUBMITTING
    assert run.provider_run_id == ""

    standin.create_delay = 0
    time.sleep(1.1)  # the dead worker's lease runs out
    restarted = worker_until_idle(standin)
    assert "Queued 1 run(s) left behind" in restarted.stdout

    run.refresh_from_db()
    [provider_run] = standin.runs_for_client_ref(str(run.id))
    assert run.status == Run.Status.QUEUED
    assert run.provider_run_id == provider_run["id"]
    assert len(standin.runs) == 1


def test_a_half_submitted_run_is_adopted_not_duplicated(signed_in, standin) -> None:
    run = submit(signed_in)
    # The previous worker reached Runflow, then died before saving the answer.
    with RunflowClient(base_url=standin.base_url, api_key=TEST_KEY) as client:
        created = client.create_run(
            input={"image_url": "data:image/png;base64,iVBORw0KGgo=", **run.input},
            idempotency_key=str(run.id),
            client_ref=str(run.id),
        )
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.SUBMITTING,
        submit_attempts=1,
        lease_until=timezone.now() - dt.timedelta(seconds=1),
    )
    call_command("worker", "--", "--batch", "--no-startup-delay")
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert run.provider_run_id == created["id"]
    assert len(standin.runs) == 1
    assert len(standin.create_calls()) == 1  # ours above; the worker only looked it up


def test_a_pending_run_whose_task_was_lost_is_queued_again(signed_in, standin) -> None:
    run = submit(signed_in)
    from django_tasks_db.models import DBTaskResult

    DBTaskResult.objects.all().delete()  # e.g. the enqueue never happened
    call_command("worker", "--", "--batch", "--no-startup-delay")
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert len(standin.runs) == 1


def test_a_live_lease_is_respected(signed_in, standin) -> None:
    run = submit(signed_in)
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.SUBMITTING,
        submit_attempts=1,
        lease_until=timezone.now() + dt.timedelta(minutes=5),
    )
    call_command("worker", "--", "--batch", "--no-startup-delay")
    run.refresh_from_db()
    assert run.status == Run.Status.SUBMITTING  # another worker may still be on it
    assert standin.create_calls() == []


def test_a_worker_killed_while_copying_masks_leaves_each_mask_once(signed_in, standin) -> None:
    from pathlib import Path

    from segmentation.models import Mask

    standin.complete_after = 0.1
    standin.file_faults = {3: "hang"}  # mask 4 of 5 stalls: the worker dies waiting for it
    run = submit(signed_in, prompt="coins", return_multiple_masks="on", max_masks="5")
    fast = {"SAM3WEB_POLL_FIRST": "0.1", "SAM3WEB_POLL_MAX_INTERVAL": "0.2"}
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "worker", "--", "--no-startup-delay", "--interval", "0.1"],
        cwd=ROOT,
        env=worker_env(standin, **fast),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: Mask.objects.filter(run=run).exclude(file="").count() == 3, 20)
        wait_for(lambda: any(r.path.endswith("mask-3.png") for r in standin.file_requests()))
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    run.refresh_from_db()
    assert run.artifacts == Run.Artifacts.COPYING  # cut off in the middle

    standin.file_faults = {}
    standin.release_files()
    worker_until_idle(standin, **fast)
    run.refresh_from_db()
    assert run.artifacts == Run.Artifacts.DONE
    masks = list(run.masks.order_by("index"))
    assert [m.index for m in masks] == [0, 1, 2, 3, 4]
    assert all(m.file and m.area for m in masks)
    # Nothing orphaned: exactly one file per mask in storage.
    stored = list((Path(django_settings.MEDIA_ROOT) / "masks").rglob("*.png"))
    assert sorted(p.name for p in stored) == sorted(Path(m.file.path).name for m in masks)
