"""The database worker, as `manage.py db_worker` runs it here: django_tasks_db's worker with two
changes a person feels.

- It wakes for new work instead of sleeping out a one-second interval, so a queued run is
  picked up at once and a result's masks are copied as soon as they arrive: on PostgreSQL it
  LISTENs and every enqueue NOTIFYs; on SQLite it looks again every WORKER_INTERVAL (0.05 s by
  default, a cheap indexed query on an idle queue).
- It stops within a couple of seconds. Ctrl+C (or SIGTERM) while idle exits at once; during a
  task it lets the task finish for up to STOP_GRACE seconds, then interrupts it. An interrupted
  task releases what it claimed (see tasks.submit_run) and goes back to the queue, where the
  next worker (another one running, or this one after a restart) picks it up; a submit is sent
  again with the same idempotency key, so the run still reaches the engine once.
- Several of them share the queue, on one machine or many. Each writes a heartbeat row every
  SAM3WEB_WORKER_HEARTBEAT seconds from a thread of its own (a long submit does not stop it);
  the workers still running hand a silent worker's tasks back to the queue (see take_over),
  without a restart.
- It outlives the database going away (PostgreSQL restarted): it logs a line, waits a moment
  and reconnects; a task cut short by it goes back to the queue rather than being recorded as
  failed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.db.utils import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone
from django_tasks_db.compat import TaskContext, task_finished, task_started
from django_tasks_db.management.commands import db_worker
from django_tasks_db.models import DBTaskResult, get_date_max
from django_tasks_db.utils import exclusive_transaction, is_locked_database_exception

from segmentation import prune
from segmentation.models import WorkerHeartbeat

logger = logging.getLogger("django_tasks_db")

# Seconds between looks at an idle queue (a cheap read: about 1% of a core on SQLite).
WORKER_INTERVAL = 0.05
# Seconds a running task may take to finish after Ctrl+C, before it is interrupted.
STOP_GRACE = 1.5
# On PostgreSQL: the channel every enqueue notifies and every idle worker listens on.
CHANNEL = "sam3web_tasks"
# Seconds to wait before reconnecting after the database went away.
RECONNECT_PAUSE = 1.0
# Seconds between two looks at the housekeeping schedule (prune) while idle.
PRUNE_CHECK_EVERY = 5.0
# What a dropped or refused database connection raises.
DATABASE_GONE = (OperationalError, InterfaceError)


class Stopped(BaseException):
    """Raised inside a task the worker was told to stop during. A BaseException, like
    KeyboardInterrupt, so the tasks' own ``except Exception`` does not take it for a failure of
    the work itself."""


class Worker(db_worker.Worker):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The task running now (its DBTaskResult id), for the heartbeat.
        self.current_task_id = ""
        # Set when the database went away: once it is back, the tasks it left marked as this
        # worker's are handed back (see _hand_back_mine).
        self._lost_database = False
        self._heartbeat: Heartbeat | None = None
        self._next_prune_check = 0.0

    def shutdown(self, signum: int, frame: FrameType | None) -> None:
        name = signal.strsignal(signum)
        if not self.running_task:
            logger.info("Received %s: stopping.", name)
            self.reset_signals()
            sys.exit(0)
        if not self.running:
            # A second Ctrl+C: do not wait out the grace period.
            raise Stopped(name)
        self.running = False
        logger.info(
            "Received %s: letting the current task finish (at most %g s).", name, STOP_GRACE
        )
        signal.signal(signal.SIGALRM, self._interrupt)
        signal.setitimer(signal.ITIMER_REAL, STOP_GRACE)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.running_task:
            logger.warning("The current task did not finish in time: interrupting it.")
            raise Stopped("stop grace period over")

    def run_task(self, db_task_result: DBTaskResult) -> None:
        # django_tasks_db's (0.13), but a task interrupted by a stop goes back to the queue as it
        # was before it was claimed, instead of being recorded as failed with a traceback: the
        # work was not wrong, only cut short. Kept close to the original, so an upgrade is a diff.
        try:
            self.running_task = True
            task = db_task_result.task
            task_result = db_task_result.task_result
            backend_type = task.get_backend()
            task_started.send(sender=backend_type, task_result=task_result)
            if task.takes_context:
                return_value = task.call(
                    TaskContext(task_result=task_result), *task_result.args, **task_result.kwargs
                )
            else:
                return_value = task.call(*task_result.args, **task_result.kwargs)
            db_task_result.set_successful(return_value)
            task_finished.send(sender=backend_type, task_result=db_task_result.task_result)
        except Stopped:
            DBTaskResult.objects.filter(pk=db_task_result.pk).update(
                status="READY", started_at=None
            )
            logger.info(
                "Task id=%s (%s) goes back to the queue.",
                db_task_result.pk,
                db_task_result.task_name,
            )
        except BaseException as e:
            if isinstance(e, DatabaseError) and connection_lost():
                # Not the task's fault: the database went away under it (whatever the error
                # says: a query in a transaction it broke reads as a TransactionManagementError).
                # The run loop reconnects and puts the task back in the queue; recording a
                # failure would break its run's chain of polls or copies.
                raise
            self._record_failure(db_task_result, e)
        finally:
            self.running_task = False
            self._run_tasks += 1

    def _record_failure(self, db_task_result: DBTaskResult, e: BaseException) -> None:
        db_task_result.set_failed(e)
        try:
            sender = type(db_task_result.task.get_backend())
            task_result = db_task_result.task_result
        except (ImportError, SuspiciousOperation):
            logger.exception("Task id=%s failed unexpectedly", db_task_result.id)
        else:
            task_finished.send(sender=sender, task_result=task_result)

    def ready(self) -> Any:
        """The tasks this worker may run now (``run_after`` is compared with the time now)."""
        tasks = DBTaskResult.objects.ready().filter(backend_name=self.backend_name)
        if not self.process_all_queues:
            tasks = tasks.filter(queue_name__in=self.queue_names)
        if self.excluded_queue_names:
            tasks = tasks.exclude(queue_name__in=self.excluded_queue_names)
        return tasks

    def wait_for_work(self) -> None:
        """Sleep until a task is ready, for at most a second (the loop then checks its database
        connection, as the original does after every sleep).

        On PostgreSQL the worker LISTENs and every enqueue NOTIFYs (see notify_workers), so it
        wakes the moment a task is committed; elsewhere it looks every ``interval``: one read on
        the open connection, while claiming (a write lock on SQLite) waits until there is
        something to claim."""
        if connection.vendor == "postgresql":
            self._wait_for_notification()
            return
        deadline = time.monotonic() + 1.0
        while self.running and time.monotonic() < deadline:
            time.sleep(self.interval)
            try:
                if self.ready().exists():
                    return
            except OperationalError as e:
                if not is_locked_database_exception(e):
                    raise

    def _wait_for_notification(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        # A task queued before LISTEN took effect sent its notification to nobody.
        if self.ready().exists():
            return
        # Tasks queued to run later (the next poll of a run) notify when they are queued, not
        # when they are due: wake for the first of them.
        due = self.ready_later().order_by("run_after").values_list("run_after", flat=True).first()
        # Without notifications (a NOTIFY lost with a dropped connection) it still looks now
        # and then: every second, or every --interval when that is longer.
        timeout = max(1.0, self.interval)
        if due is not None:
            timeout = min(timeout, max(0.0, (due - timezone.now()).total_seconds()))
        pg = connection.connection
        assert pg is not None
        # As Django's own errors, so a dropped connection reads like any other (and marks the
        # connection for close_old_connections to replace).
        with connection.wrap_database_errors:
            for _ in pg.notifies(timeout=timeout, stop_after=1):
                break

    def ready_later(self) -> Any:
        """The tasks this worker may run once their run_after has come."""
        tasks = DBTaskResult.objects.filter(
            status="READY",
            backend_name=self.backend_name,
            run_after__gt=timezone.now(),
            run_after__lt=get_date_max(),
        )
        if not self.process_all_queues:
            tasks = tasks.filter(queue_name__in=self.queue_names)
        return tasks

    def run(self) -> None:
        logger.info(
            "Starting worker worker_id=%s queues=%s", self.worker_id, ",".join(self.queue_names)
        )
        # A worker run inside a transaction (a test's) shares no rows with another connection:
        # it writes no heartbeat (its tasks, should it die, are taken over as ownerless ones).
        if not connection.in_atomic_block:
            self._heartbeat = Heartbeat(self)
            self._heartbeat.begin()
        try:
            if self.startup_delay and self.interval:
                time.sleep(random.random())  # noqa: S311 - workers starting together spread out
            while self.running:
                try:
                    if self._loop_once():
                        return
                except DatabaseError as e:
                    # Whatever its class, an error on a connection that no longer works (a
                    # task cut short re-raises it: see run_task) means the database went away.
                    if not (isinstance(e, DATABASE_GONE) or connection_lost()):
                        raise
                    self._reconnect(e)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if self._heartbeat is not None:
                self._heartbeat.end()
            logger.info("Worker worker_id=%s stopped.", self.worker_id)

    def _loop_once(self) -> bool:
        """One turn of django_tasks_db's loop (0.13), with its sleep replaced by wait_for_work
        (kept close to the original, so an upgrade is a diff). True when the worker is done."""
        close_old_connections()
        if self._lost_database:
            self._hand_back_mine()
            self._lost_database = False
        tasks = self.ready()
        with exclusive_transaction(tasks.db):
            try:
                task_result = tasks.get_locked()
                retrieved = True
                if task_result is not None:
                    task_result.claim(self.worker_id)
            except OperationalError as e:
                retrieved = False
                if not is_locked_database_exception(e):
                    raise
                task_result = None  # someone else is writing: look again shortly

        if task_result is not None:
            self.current_task_id = str(task_result.pk)
            try:
                self.run_task(task_result)
            finally:
                self.current_task_id = ""

        if self.batch and retrieved and task_result is None:
            return True
        if self.max_tasks is not None and self._run_tasks >= self.max_tasks:
            return True
        if self.running and task_result is None:
            self._housekeeping()
            self.wait_for_work()
        return False

    def _hand_back_mine(self) -> None:
        """After the database was away: put back in the queue every task still marked as
        running on this worker. The task it was running when the connection dropped, and also
        one whose claim was committed while the worker saw the commit fail, or whose failure
        could not be recorded: this worker runs one task at a time and runs none now, and it
        kept beating, so no other worker would ever take them over."""
        for task in _running():
            mine = bool(task.worker_ids) and task.worker_ids[-1] == self.worker_id
            if mine and hand_back(str(task.pk), self.worker_id, task):
                logger.info(
                    "Task id=%s (%s), cut short by the database, is back in the queue.",
                    task.pk,
                    task.task_name,
                )

    def _reconnect(self, error: Exception) -> None:
        """The database went away (restarted, a network cut): drop the connection, wait a
        moment, and let the loop connect again."""
        self._lost_database = True
        logger.warning(
            "Lost the database (%s): reconnecting in %g s.",
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
            RECONNECT_PAUSE,
        )
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone
            connection.connection = None
        time.sleep(RECONNECT_PAUSE)

    def _housekeeping(self) -> None:
        """While idle, now and then: prune when its time has come. Never stops the worker."""
        if time.monotonic() < self._next_prune_check:
            return
        self._next_prune_check = time.monotonic() + PRUNE_CHECK_EVERY
        try:
            prune.prune_if_due()
        except Exception:
            logger.exception("Prune failed; the worker carries on.")


def connection_lost() -> bool:
    """Whether this thread's database connection no longer works (the server went away)."""
    try:
        return connection.connection is None or not connection.is_usable()
    except Exception:  # noqa: BLE001 - a connection that cannot even be asked is lost
        return True


def notify_workers(sender: Any, **kwargs: Any) -> None:
    """django.tasks' task_enqueued signal: wake the idle workers. On PostgreSQL a NOTIFY is
    sent with the enqueue's transaction, so a worker never wakes for a task it cannot see yet;
    other databases have workers that look for themselves."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {CHANNEL}")


# --- heartbeats and taking over ---------------------------------------------------------------


class Heartbeat(threading.Thread):
    """The worker's heartbeat row, kept fresh from a thread with its own database connection,
    so a task that takes minutes does not make the worker look dead. The same thread looks for
    workers that have stopped beating and takes their tasks over."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name=f"heartbeat:{worker.worker_id}", daemon=True)
        self.worker = worker
        self.stopping = threading.Event()
        # Since when this worker's own beats have been getting through (None: they are not).
        self.healthy_since: float | None = None
        self.last_beat: float | None = None

    def begin(self) -> None:
        """The row is written before the first task is claimed: a worker always has a row
        while it runs a task, so a task without one is a dead worker's."""
        now = timezone.now()
        WorkerHeartbeat.objects.update_or_create(
            worker_id=self.worker.worker_id,
            defaults={
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": now,
                "seen_at": now,
                "task_id": "",
            },
        )
        self.start()

    def end(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        # Without the database its row goes stale and the workers still running remove it.
        with contextlib.suppress(*DATABASE_GONE):
            WorkerHeartbeat.objects.filter(worker_id=self.worker.worker_id).delete()

    def run(self) -> None:
        try:
            while not self.stopping.wait(settings.SAM3WEB_WORKER_HEARTBEAT):
                self.beat()
        finally:
            connection.close()

    def beat(self) -> None:
        try:
            fields = {"seen_at": timezone.now(), "task_id": self.worker.current_task_id}
            if not WorkerHeartbeat.objects.filter(worker_id=self.worker.worker_id).update(**fields):
                # Taken for dead while it could not beat (its tasks were handed back).
                logger.warning(
                    "Worker %s was taken for dead: beating again.", self.worker.worker_id
                )
                WorkerHeartbeat.objects.create(
                    worker_id=self.worker.worker_id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=timezone.now(),
                    **fields,
                )
            now = time.monotonic()
            # A beat that could not get through for a while (a connect that hung while the
            # database was away) starts the count again, like a failed one.
            gap = now - self.last_beat if self.last_beat is not None else 0.0
            if self.healthy_since is None or gap > 3 * settings.SAM3WEB_WORKER_HEARTBEAT + 1:
                self.healthy_since = now
            self.last_beat = now
            # Another worker's row can be judged only once this one has been beating for as
            # long as a silent worker takes to be called dead: after the database was away,
            # every worker gets that long to beat again before anyone is taken for dead.
            judge = now - self.healthy_since >= settings.SAM3WEB_WORKER_DEAD_AFTER
            take_over(self.worker.worker_id, stale=judge)
        except DATABASE_GONE as e:
            if self.healthy_since is not None:
                logger.warning("Heartbeat lost the database (%s): retrying.", e)
            self.healthy_since = None
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                connection.connection = None
        except Exception:
            logger.exception("Heartbeat failed; it tries again.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def take_over(me: str = "", *, stale: bool = True) -> int:
    """Hand the tasks of dead workers back to the queue; the number of tasks handed back.

    A worker is dead when its heartbeat row is older than SAM3WEB_WORKER_DEAD_AFTER (only
    judged when ``stale``), or at once when the row names this machine and a process that no
    longer exists. A running task whose worker has no row at all, started that long ago, is
    a dead worker's too (one that died before its first beat). Safe with several workers
    doing it at once: a row is taken over by the one worker whose conditional delete removes
    it, and a task handed back by one conditional update."""
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.SAM3WEB_WORKER_DEAD_AFTER)
    here = socket.gethostname()
    dead_rows = Q(hostname=here) | Q(seen_at__lt=cutoff) if stale else Q(hostname=here)
    total = 0
    for row in WorkerHeartbeat.objects.filter(dead_rows).exclude(worker_id=me):
        local = row.hostname == here
        if local and row.pid == os.getpid():
            continue  # a row of this process's (an earlier worker in it): not dead
        if not (local and not _pid_alive(row.pid)) and not (stale and row.seen_at < cutoff):
            continue  # alive, or silent but not to be judged now
        with transaction.atomic():
            if not WorkerHeartbeat.objects.filter(pk=row.pk, seen_at=row.seen_at).delete()[0]:
                continue  # another worker took it over, or it beat again
            count = sum(
                hand_back(str(t.pk), row.worker_id, t)
                for t in _running()
                if t.worker_ids and t.worker_ids[-1] == row.worker_id
            )
        silent = (now - row.seen_at).total_seconds()
        logger.warning(
            "Worker %s (%s, pid %s) died (silent for %.0f s): %d task(s) taken over.",
            row.worker_id,
            row.hostname,
            row.pid,
            silent,
            count,
        )
        total += count
    if stale:
        total += _take_over_ownerless(cutoff)
    return total


def _running() -> Any:
    return DBTaskResult.objects.filter(status="RUNNING").only(
        "id", "worker_ids", "task_path", "args_kwargs", "started_at"
    )


def _take_over_ownerless(cutoff: dt.datetime) -> int:
    living = set(WorkerHeartbeat.objects.values_list("worker_id", flat=True))
    count = 0
    for t in _running().filter(started_at__lt=cutoff):
        owner = t.worker_ids[-1] if t.worker_ids else ""
        if owner not in living and hand_back(str(t.pk), owner, t):
            logger.warning(
                "Task id=%s (%s) of worker %s, which left no heartbeat, taken over.",
                t.pk,
                t.task_name,
                owner or "unknown",
            )
            count += 1
    return count


def hand_back(task_id: str, worker_id: str, task: DBTaskResult | None = None) -> int:
    """Put a task ``worker_id`` was running back in the queue, as it was before it was
    claimed, and release what it had claimed (tasks.release_claim). 1 if it was handed back,
    0 if it was no longer running (finished, or handed back by another worker)."""
    from segmentation.tasks import release_claim

    with transaction.atomic():
        if task is None:
            task = _running().filter(pk=task_id).first()
            if task is None or not task.worker_ids or task.worker_ids[-1] != worker_id:
                return 0
        if not DBTaskResult.objects.filter(pk=task_id, status="RUNNING").update(
            status="READY", started_at=None
        ):
            return 0
        release_claim(task.task_path, list(task.args_kwargs.get("args", [])))
        notify_workers(sender=None)
    return 1
