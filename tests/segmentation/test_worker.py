"""The database worker (segmentation.worker, behind `manage.py db_worker` and `manage.py
worker`): it picks new work up at once, and Ctrl+C stops it in seconds without losing or
doubling a run, even in the middle of sending one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import psycopg
import pytest
from django_tasks_db.models import DBTaskResult

from segmentation.models import Run
from tests.factories import submit, wait_for, worker_env, worker_until_idle
from tests.postgres_server import PostgresServer, binaries
from tests.sample_images import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def start(standin, *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env=worker_env(standin, SAM3WEB_SUBMIT_LEASE="600"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(worker: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[float, str]:
    """Send the signal (Ctrl+C by default); the seconds until the worker exited, its output."""
    began = time.monotonic()
    worker.send_signal(sig)
    output, _ = worker.communicate(timeout=30)
    return time.monotonic() - began, output


def test_a_plain_db_worker_runs_the_apps_tasks_and_stops_at_once_when_idle(
    signed_in, standin
) -> None:
    worker = start(standin, "db_worker", "--no-startup-delay")
    try:
        run = submit(signed_in)
        wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.QUEUED, timeout=30)
    finally:
        seconds, output = stop(worker)
    assert worker.returncode == 0, output
    assert seconds < 2, output
    assert "Traceback" not in output


def test_sigterm_stops_it_like_ctrl_c(signed_in, standin) -> None:
    worker = start(standin, "worker", "--", "--no-startup-delay")
    wait_for(lambda: "Starting worker" in (worker.stdout.readline() if worker.stdout else ""))
    seconds, output = stop(worker, signal.SIGTERM)
    assert worker.returncode == 0 and seconds < 2, output


def test_ctrl_c_while_a_submit_is_in_flight_stops_in_seconds_and_the_run_is_sent_once(
    signed_in, standin
) -> None:
    # Runflow records the run, then holds its answer: Ctrl+C comes while the worker waits.
    standin.create_delay = 30.0
    run = submit(signed_in)
    worker = start(standin, "worker", "--", "--no-startup-delay")
    try:
        wait_for(lambda: len(standin.runs_for_client_ref(str(run.id))) == 1, timeout=30)
    finally:
        seconds, output = stop(worker)
    # The task had a moment to finish, then was interrupted: well before Runflow answered.
    assert seconds < 4, output
    assert worker.returncode == 0, output
    assert "interrupting it" in output and "goes back to the queue" in output
    assert "Traceback" not in output and "FAILED" not in output, output
    run.refresh_from_db()
    assert run.status == Run.Status.SUBMITTING and run.provider_run_id == ""
    # The claim is released: the next worker need not wait out the ten-minute lease.
    assert run.lease_until is not None and run.lease_until.timestamp() <= time.time()
    # The task is back in the queue, as it was before the worker took it.
    task = DBTaskResult.objects.get(pk=run.task_id)
    assert (task.status, task.started_at, task.traceback) == ("READY", None, "")

    standin.create_delay = 0
    restarted = worker_until_idle(standin, SAM3WEB_SUBMIT_LEASE="600")
    assert "left behind" not in restarted.stdout  # nothing to recover: it was queued
    run.refresh_from_db()
    [provider_run] = standin.runs_for_client_ref(str(run.id))
    assert run.status == Run.Status.QUEUED
    assert run.provider_run_id == provider_run["id"]
    assert len(standin.runs) == 1  # sent twice, with one idempotency key: one run at Runflow
    assert not DBTaskResult.objects.filter(status="RUNNING").exists()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (bin/setup --dev installs it)")
    server = PostgresServer().start()
    yield server
    server.stop()


def test_on_postgresql_a_queued_task_wakes_the_idle_worker_at_once(postgres, standin) -> None:
    """LISTEN/NOTIFY: with --interval 30 only a notification can wake the worker within a
    second, and it does, for each of three tasks queued by another process."""
    env = worker_env(standin, DATABASE_URL=postgres.url)
    postgres.migrate(env, ROOT)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--no-startup-delay", "--interval", "30"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with psycopg.connect(
            postgres.url.replace("postgres://", "postgresql://"), autocommit=True
        ) as db:
            time.sleep(1.5)  # the worker is idle, waiting
            for _ in range(3):
                queued = subprocess.run(
                    [sys.executable, "manage.py", "shell", "-c", ENQUEUE],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert queued.returncode == 0, queued.stderr
                task_id = queued.stdout.split()[-1]  # after the shell's own greeting
                wait_for(partial(finished, db, task_id), timeout=20)
                times = finished(db, task_id)
                assert times is not None
                enqueued_at, finished_at = times
                assert (finished_at - enqueued_at).total_seconds() < 1.0
    finally:
        seconds, output = stop(worker)
    assert worker.returncode == 0 and seconds < 2, output


# A task that finds nothing to do: a poll of a run that does not exist.
ENQUEUE = (
    "from segmentation.tasks import poll_run; "
    "print(poll_run.enqueue('00000000-0000-0000-0000-000000000000').id)"
)


def finished(db: Any, task_id: str) -> tuple[Any, Any] | None:
    row = db.execute(
        "SELECT enqueued_at, finished_at FROM django_tasks_database_dbtaskresult "
        "WHERE id = %s AND status = 'SUCCESSFUL'",
        [task_id],
    ).fetchone()
    return (row[0], row[1]) if row else None
