from __future__ import annotations

import argparse
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from segmentation.locks import held
from segmentation.signals import worker_starting
from segmentation.tasks import recover_runs
from segmentation.worker import take_over


class Command(BaseCommand):
    help = (
        "Queue again the runs a stopped worker left behind, then run the database task worker. "
        "Arguments after -- go to db_worker (e.g. -- --batch)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("db_worker_args", nargs=argparse.REMAINDER)

    def handle(self, *args: Any, db_worker_args: list[str], **options: Any) -> None:
        # One starting worker at a time (bin/serve starts several together): each looks at
        # what the others have queued before queueing anything itself.
        with held("worker-start-up"):
            # A dead worker of this machine (killed, then restarted) is known at once: its
            # tasks go back to the queue now instead of after its heartbeat goes stale.
            recovered = take_over(stale=False)
            recovered += recover_runs()
            for _receiver, count in worker_starting.send(sender=self.__class__):
                recovered += count if isinstance(count, int) else 0
        if recovered:
            self.stdout.write(f"Queued {recovered} run(s) left behind by a stopped worker.")
        rest = [a for a in db_worker_args if a != "--"]
        call_command("db_worker", *rest)
