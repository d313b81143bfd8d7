"""Several workers share one queue: each run is sent once and none is lost, whether the workers
are many, killed with SIGKILL in the middle of a submit or a copy, racing for the same run, or
the database restarts under them. A dead worker's tasks are taken over by the workers still
running, without a restart, through their heartbeats (segmentation.worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from segmentation import runs, schema
from segmentation.models import Mask, Run, WorkerHeartbeat
from tests.factories import stored_image, wait_for, worker_env
from tests.postgres_server import binaries
from tests.sample_images import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

# Fast heartbeats, quick to call a silent worker dead, quick polls: a test's takeover happens
# in a couple of seconds instead of the production fifteen. The long lease makes sure that it
# is the takeover that frees a killed worker's submit, not the lease running out.
FAST = {
    "SAM3WEB_WORKER_HEARTBEAT": "0.2",
    "SAM3WEB_WORKER_DEAD_AFTER": "2",
    "SAM3WEB_POLL_FIRST": "0.05",
    "SAM3WEB_POLL_MAX_INTERVAL": "0.2",
    "SAM3WEB_SUBMIT_LEASE": "600",
}
WORKER = ("worker", "--", "--no-startup-delay")
DB_WORKER = ("db_worker", "--no-startup-delay")


def socket_folder() -> str:
    """The folder of the PostgreSQL socket the test database is reached through ("" if none)."""
    db = connection.settings_dict
    return str(db["HOST"] or db.get("OPTIONS", {}).get("host", ""))


def on_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("several workers at once are exercised on PostgreSQL (bin/test runs both)")


class Workers:
    """Worker processes of this test's database, their output in files (a pipe nobody reads
    would fill and stall them)."""

    def __init__(self, standin: Any, tmp: Path, **env: str) -> None:
        self.env = worker_env(standin, **{**FAST, **env})
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, n: int, command: tuple[str, ...] = WORKER) -> None:
        for _ in range(n):
            log = self.tmp / f"worker-{len(self.procs)}.log"
            self.logs.append(log)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", *command],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )

    def output(self) -> str:
        return "".join(f"--- {log.name}\n{log.read_text()}" for log in self.logs)

    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill_the_one_running(self, task_id: str) -> subprocess.Popen[bytes]:
        """SIGKILL the worker whose heartbeat says it is running this task."""
        return self._kill(WorkerHeartbeat.objects.filter(task_id=task_id))

    def kill_a_busy_one(self) -> subprocess.Popen[bytes]:
        """SIGKILL a worker whose heartbeat says it is running a task."""
        return self._kill(WorkerHeartbeat.objects.exclude(task_id=""))

    def _kill(self, rows: Any) -> subprocess.Popen[bytes]:
        pids: list[int] = []

        def found() -> bool:
            # Read once: the worker may finish the task (and beat with another) any moment.
            pids.extend(rows.values_list("pid", flat=True)[:1])
            return bool(pids)

        wait_for(found, 30)
        [proc] = [p for p in self.procs if p.pid == pids[0]]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return proc

    def stop(self) -> None:
        for proc in self.running():
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def workers(standin: Any, tmp_path: Path) -> Iterator[Workers]:
    standin.complete_after = 0.05  # Runflow answers at once
    group = Workers(standin, tmp_path)
    yield group
    group.stop()
    print(group.output())  # shown when the test fails


def burst(owner: Any, n: int) -> list[str]:
    """``n`` runs made as the form makes them, each with its submit queued."""
    image = stored_image("cat.jpg")
    return [
        str(
            runs.create_run(
                owner=owner, image=image, input=schema.validate_input({"prompt": f"cat {i}"})
            ).pk
        )
        for i in range(n)
    ]


def done(ids: list[str]) -> bool:
    return Run.objects.filter(
        pk__in=ids, status=Run.Status.SUCCEEDED, artifacts=Run.Artifacts.DONE
    ).count() == len(ids)


def wait_until_done(ids: list[str], timeout: float, workers: Workers) -> None:
    """Wait for every run to finish; on a timeout, say which did not, where their tasks are,
    and what the workers printed."""
    try:
        wait_for(lambda: done(ids), timeout)
    except AssertionError:
        raise AssertionError(f"runs not done:\n{stuck(ids)}\n{workers.output()}") from None


def stuck(ids: list[str]) -> str:
    lines = []
    unfinished = Run.objects.filter(pk__in=ids).exclude(
        status=Run.Status.SUCCEEDED, artifacts=Run.Artifacts.DONE
    )
    for run in unfinished:
        lines.append(
            f"run {run.pk}: {run.status} artifacts={run.artifacts} {run.error_message!r} "
            f"notes={run.artifact_notes}"
        )
        for name in ("task_id", "poll_task_id", "artifacts_task_id"):
            task_id = getattr(run, name)
            task = DBTaskResult.objects.filter(pk=task_id).first() if task_id else None
            state = f"{task.status} workers={task.worker_ids}" if task else "no such task"
            lines.append(f"  {name}={task_id}: {state}")
    for task in DBTaskResult.objects.exclude(status__in=["SUCCESSFUL", "READY"]):
        lines.append(f"task {task.pk} {task.task_path} {task.status} {task.worker_ids}")
        lines.append(f"  {task.exception_class_path} {task.traceback}")
    lines.extend(str(row.__dict__) for row in WorkerHeartbeat.objects.all())
    return "\n".join(lines)


def assert_each_sent_once_and_finished(standin: Any, ids: list[str], output: str) -> None:
    assert done(ids), output
    for run_id in ids:
        assert len(standin.runs_for_client_ref(run_id)) == 1, (run_id, output)
    assert len(standin.runs) == len(ids)
    # Each run's masks stored once, no copy left half-done.
    for run in Run.objects.filter(pk__in=ids):
        assert Mask.objects.filter(run=run).count() == run.mask_count
    # The last tasks record their end a moment after the run shows it.
    wait_for(lambda: not DBTaskResult.objects.filter(status="RUNNING").exists(), 10)
    assert not DBTaskResult.objects.filter(status="FAILED").exists(), output
    assert "Traceback" not in output, output


# --- PostgreSQL: a burst, and workers killed in it ---------------------------------------------


def test_four_workers_share_a_burst_each_run_sent_once(owner, standin, workers) -> None:
    on_postgresql()
    ids = burst(owner, 200)
    workers.start(4)
    wait_until_done(ids, 120, workers)
    assert_each_sent_once_and_finished(standin, ids, workers.output())
    # Every worker did its share.
    living = set(WorkerHeartbeat.objects.values_list("worker_id", flat=True))
    claimed_by = {
        w for ids in DBTaskResult.objects.values_list("worker_ids", flat=True) for w in ids
    }
    assert len(living) == 4 and claimed_by == living


@pytest.mark.parametrize("command", [WORKER, DB_WORKER], ids=["worker", "db_worker"])
def test_a_worker_killed_mid_burst_loses_nothing(owner, standin, workers, command) -> None:
    on_postgresql()
    ids = burst(owner, 80)
    workers.start(4, command)
    wait_for(lambda: Run.objects.filter(pk__in=ids, status=Run.Status.SUCCEEDED).count() > 10)
    killed = workers.kill_a_busy_one()
    # No restart: the three left take over.
    wait_until_done(ids, 120, workers)
    output = workers.output()
    assert f"pid {killed.pid}) died" in output, output
    assert not WorkerHeartbeat.objects.filter(pid=killed.pid).exists()
    assert_each_sent_once_and_finished(standin, ids, output)


def test_a_worker_killed_mid_submit_is_taken_over_and_the_run_made_once(
    owner, standin, workers
) -> None:
    # Runflow records the run, then holds its answer: the worker is killed while waiting.
    standin.create_delay = 30.0
    [run_id] = burst(owner, 1)
    workers.start(2)
    wait_for(lambda: len(standin.runs_for_client_ref(run_id)) == 1, 30)
    killed = workers.kill_the_one_running(Run.objects.get(pk=run_id).task_id)
    standin.create_delay = 0
    # The other worker (no restart) sends it again with the same idempotency key.
    wait_until_done([run_id], 30, workers)
    output = workers.output()
    assert f"pid {killed.pid}) died" in output and "1 task(s) taken over" in output, output
    assert_each_sent_once_and_finished(standin, [run_id], output)
    assert Run.objects.get(pk=run_id).submit_attempts == 2


def test_a_worker_killed_mid_copy_is_taken_over_and_each_mask_stored_once(
    owner, standin, workers
) -> None:
    standin.file_faults = {1: "hang"}  # the second mask stalls: the worker dies copying it
    run = runs.create_run(
        owner=owner,
        image=stored_image("coins.png"),
        input=schema.validate_input(
            {"prompt": "coins", "return_multiple_masks": True, "max_masks": 4}
        ),
    )
    workers.start(2)
    wait_for(lambda: Run.objects.get(pk=run.pk).artifacts == Run.Artifacts.COPYING, 30)
    wait_for(lambda: Run.objects.get(pk=run.pk).artifacts_task_id != "", 30)
    task_id = Run.objects.get(pk=run.pk).artifacts_task_id
    # The worker is stuck in the second mask's download before it is killed (not merely
    # about to ask for it, when it could still finish the copy itself).
    wait_for(lambda: any(r.path.endswith("/mask-1.png") for r in standin.file_requests()), 30)
    standin.file_faults = {}
    killed = workers.kill_the_one_running(task_id)
    standin.release_files()
    wait_until_done([str(run.pk)], 30, workers)
    output = workers.output()
    assert f"pid {killed.pid}) died" in output, output
    assert_each_sent_once_and_finished(standin, [str(run.pk)], output)
    assert Run.objects.get(pk=run.pk).mask_count > 1


def test_two_workers_racing_for_the_same_run_send_it_once(owner, standin, workers) -> None:
    """A run queued twice (a recovery and its own submit, say) and two idle workers woken for
    it together: one claims it, the other finds it claimed."""
    standin.create_delay = 0.5  # both submits are in flight together
    [run_id] = burst(owner, 1)
    from segmentation.tasks import submit_run

    submit_run.enqueue(run_id)
    workers.start(2)
    wait_until_done([run_id], 30, workers)
    assert_each_sent_once_and_finished(standin, [run_id], workers.output())
    assert Run.objects.get(pk=run_id).submit_attempts == 1
    outcomes = DBTaskResult.objects.filter(task_path=submit_run.module_path)
    assert [t.return_value for t in outcomes].count("not claimed") == 1


# --- PostgreSQL restarted under the workers ---------------------------------------------------


def restart_postgresql() -> None:
    """Stop the suite's own PostgreSQL (fast: every connection is cut), wait, start it again."""
    host = socket_folder()
    data = Path(host) / "data"
    bin_dir = binaries()
    assert bin_dir is not None
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    connection.close()
    subprocess.run(
        [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    time.sleep(2)
    options = f"-c listen_addresses='' -c unix_socket_directories={host} -c fsync=off"
    subprocess.run(
        [
            *prefix,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(Path(host) / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def on_own_cluster() -> None:
    on_postgresql()
    host = socket_folder()
    if not (host.startswith("/") and (Path(host) / "data").is_dir()):
        pytest.skip("the database is not a throwaway cluster of the test run's own")


def test_postgresql_restarted_under_load_the_workers_reconnect_and_finish(
    owner, standin, workers
) -> None:
    on_own_cluster()
    ids = burst(owner, 80)
    workers.start(3)
    wait_for(lambda: Run.objects.filter(pk__in=ids, status=Run.Status.SUCCEEDED).count() > 15)
    restart_postgresql()
    wait_until_done(ids, 120, workers)
    output = workers.output()
    assert "Lost the database" in output, output
    assert len(workers.running()) == 3, output  # none crashed
    # Nothing taken for dead: every worker beat again within the grace period.
    assert "died" not in output, output
    assert_each_sent_once_and_finished(standin, ids, output)


# --- SQLite ------------------------------------------------------------------------------------


def test_on_sqlite_three_workers_stay_correct_and_never_report_a_locked_database(
    owner, standin, workers
) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's own locking")
    ids = burst(owner, 60)
    workers.start(3)
    wait_until_done(ids, 120, workers)
    output = workers.output()
    assert_each_sent_once_and_finished(standin, ids, output)
    assert "database is locked" not in output.lower(), output
    assert WorkerHeartbeat.objects.count() == 3


def test_after_a_restart_a_worker_hands_back_what_the_database_left_marked_as_its_own(
    owner, standin, workers
) -> None:
    """A claim committed while the worker saw its commit fail (or a failure it could not
    record) leaves a task marked as running on a worker that is alive and beating: nobody would
    ever take it over. The worker hands such tasks back once the database is back."""
    on_own_cluster()
    [run_id] = burst(owner, 1)
    task_id = Run.objects.get(pk=run_id).task_id
    DBTaskResult.objects.filter(pk=task_id).update(
        status="RUNNING", worker_ids=["w-alive"], started_at=timezone.now()
    )
    workers.start(1, ("worker", "--", "--no-startup-delay", "--worker-id", "w-alive"))
    wait_for(lambda: WorkerHeartbeat.objects.filter(worker_id="w-alive").exists(), 30)
    time.sleep(1)
    assert Run.objects.get(pk=run_id).status == Run.Status.PENDING  # marked as its own: left be
    restart_postgresql()
    wait_until_done([run_id], 60, workers)
    output = workers.output()
    assert f"Task id={task_id} (submit_run), cut short" in output, output
    assert_each_sent_once_and_finished(standin, [run_id], output)
