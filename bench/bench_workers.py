"""Several workers: runs per second through submit → result → stored masks, with 1, 2 and 4
worker processes sharing the queue, on SQLite and on PostgreSQL (a throwaway cluster), the
Runflow stand-in answering at once; and the ratio to one worker.

The workers are started (and beating) first; then a burst of N runs is made in one
transaction, its submits queued as it commits; the clock runs from the commit to the last
run's masks stored. Each run is checked to have been sent once.

    .venv/bin/python bench/bench_workers.py [--runs 1000] [--workers 1 2 4] [--db sqlite postgresql]

Runs against throwaway data folders and databases, never the app's own."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # this database, in this process
    args = parser.parse_args()
    if args.one:
        measure(args.one, args.runs, args.workers)
        return
    from bench.common import run_child

    print(f"{args.runs} runs, stand-in answering at once; runs per second (ratio to 1 worker)")
    for db in args.db:
        # A process per database: Django is set up once per process.
        run_child(
            [sys.executable, __file__, "--one", db, "--runs", str(args.runs), "--workers"]
            + [str(n) for n in args.workers]
        )


def measure(db: str, n: int, counts: list[int]) -> None:
    from bench.common import throwaway_django, throwaway_postgres

    if db == "postgresql":
        throwaway_postgres()
    data = throwaway_django()
    import logging

    logging.getLogger("segmentation").setLevel(logging.WARNING)  # not a line per run made

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import transaction
    from django_tasks_db.models import DBTaskResult

    from runflow_standin import RunflowStandin
    from segmentation import runs, schema
    from segmentation.imaging.intake import intake_bytes
    from segmentation.imaging.store import store_image
    from segmentation.models import Run, WorkerHeartbeat

    call_command("migrate", verbosity=0)
    owner = get_user_model().objects.create_user("bench")
    image = store_image(
        intake_bytes((ROOT / "segmentation" / "sample_images" / "astronaut.jpg").read_bytes()),
        original_name="astronaut.jpg",
    )
    inputs = [schema.validate_input({"prompt": f"cat {i}"}) for i in range(n)]
    first: float | None = None
    with RunflowStandin(api_keys=["bench-key"]) as standin:
        for count in counts:
            standin.reset()
            standin.complete_after = 0.0
            Run.objects.all().delete()
            DBTaskResult.objects.all().delete()
            env = {
                **os.environ,
                "SAM3WEB_DATA_DIR": data,
                "RUNFLOW_BASE_URL": standin.base_url,
                "RUNFLOW_API_KEY": "bench-key",
                "SAM3WEB_STATIC_MANIFEST": "0",
                "SAM3WEB_POLL_FIRST": "0.05",
            }
            procs = [
                subprocess.Popen(
                    [sys.executable, "manage.py", "worker", "--", "--no-startup-delay"],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(count)
            ]
            try:
                wait(lambda: WorkerHeartbeat.objects.count() >= count, 120)  # noqa: B023
                began = time.monotonic()
                with transaction.atomic():
                    for data_in in inputs:
                        runs.create_run(owner=owner, image=image, input=data_in)
                wait(
                    lambda: (
                        Run.objects.filter(
                            status=Run.Status.SUCCEEDED, artifacts=Run.Artifacts.DONE
                        ).count()
                        >= n
                    ),
                    1800,
                )
                seconds = time.monotonic() - began
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    proc.wait(30)
            sent = {run.get("client_ref") for run in standin.runs.values()}
            assert len(standin.runs) == n == len(sent), "a run was sent twice"
            rate = n / seconds
            first = first or rate
            print(
                f"  {db:<10} {count} worker{'s' if count > 1 else ' '}  {seconds:7.1f} s  "
                f"{rate:6.1f} runs/s  ({rate / first:.2f}×)",
                flush=True,
            )


def wait(predicate: object, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
