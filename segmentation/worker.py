"""The database worker, as `manage.py db_worker` runs it here: django_tasks_db's worker with two
changes a person feels.

- It wakes for new work instead of sleeping out a one-second interval: it looks again every
  WORKER_INTERVAL (0.05 s by default, a cheap indexed query on an idle queue), so a queued run
  is picked up at once and a result's masks are copied as soon as they arrive.
- It stops within a couple of seconds. Ctrl+C (or SIGTERM) while idle exits at once; during a
  task it lets the task finish for up to STOP_GRACE seconds, then interrupts it. An interrupted
  task releases what it claimed (see tasks.submit_run), and `manage.py worker` queues it again
  at the next start (tasks.recover_runs); a submit is sent again with the same idempotency
  key, so the run still reaches the engine once.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import time
from types import FrameType
from typing import Any

from django.db import close_old_connections
from django.db.utils import OperationalError
from django_tasks_db.management.commands import db_worker
from django_tasks_db.models import DBTaskResult
from django_tasks_db.utils import exclusive_transaction, is_locked_database_exception

logger = logging.getLogger("django_tasks_db")

# Seconds between looks at an idle queue (a cheap read: about 1% of a core on SQLite).
WORKER_INTERVAL = 0.05
# Seconds a running task may take to finish after Ctrl+C, before it is interrupted.
STOP_GRACE = 1.5


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
        connection, as the original does after every sleep). Looking is one read on the open
        connection; claiming (a write lock on SQLite) waits until there is something to claim."""
        deadline = time.monotonic() + 1.0
        while self.running and time.monotonic() < deadline:
            time.sleep(self.interval)
            try:
                if self.ready().exists():
                    return
            except OperationalError as e:
                if not is_locked_database_exception(e):
                    raise

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
