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
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import time
from types import FrameType
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.db import close_old_connections, connection
from django.db.utils import OperationalError
from django.utils import timezone
from django_tasks_db.compat import TaskContext, task_finished, task_started
from django_tasks_db.management.commands import db_worker
from django_tasks_db.models import DBTaskResult, get_date_max
from django_tasks_db.utils import exclusive_transaction, is_locked_database_exception

logger = logging.getLogger("django_tasks_db")

# Seconds between looks at an idle queue (a cheap read: about 1% of a core on SQLite).
WORKER_INTERVAL = 0.05
# Seconds a running task may take to finish after Ctrl+C, before it is interrupted.
STOP_GRACE = 1.5
# On PostgreSQL: the channel every enqueue notifies and every idle worker listens on.
CHANNEL = "sam3web_tasks"


class Stopped(BaseException):
    """Raised inside a task the worker was told to stop during. A BaseException, like
    KeyboardInterrupt, so the tasks' own ``except Exception`` does not take it for a failure of
    the work itself."""


class Worker(db_worker.Worker):
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
            db_task_result.set_failed(e)
            try:
                sender = type(db_task_result.task.get_backend())
                task_result = db_task_result.task_result
            except (ImportError, SuspiciousOperation):
                logger.exception("Task id=%s failed unexpectedly", db_task_result.id)
            else:
                task_finished.send(sender=sender, task_result=task_result)
        finally:
            self.running_task = False
            self._run_tasks += 1

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
        # django_tasks_db's loop (0.13), with its sleep replaced by wait_for_work. Kept close to
        # the original, so an upgrade is a diff.
        logger.info(
            "Starting worker worker_id=%s queues=%s", self.worker_id, ",".join(self.queue_names)
        )
        if self.startup_delay and self.interval:
            time.sleep(random.random())  # noqa: S311 - several workers starting together spread out
        while self.running:
            close_old_connections()
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
                self.run_task(task_result)

            if self.batch and retrieved and task_result is None:
                return
            if self.max_tasks is not None and self._run_tasks >= self.max_tasks:
                return
            if self.running and task_result is None:
                self.wait_for_work()
        signal.setitimer(signal.ITIMER_REAL, 0)
        logger.info("Worker worker_id=%s stopped.", self.worker_id)


def notify_workers(sender: Any, **kwargs: Any) -> None:
    """django.tasks' task_enqueued signal: wake the idle workers. On PostgreSQL a NOTIFY is
    sent with the enqueue's transaction, so a worker never wakes for a task it cannot see yet;
    other databases have workers that look for themselves."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {CHANNEL}")
