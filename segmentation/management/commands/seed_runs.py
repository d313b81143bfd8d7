from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from segmentation.seed import default_images_dir, seed_runs


class Command(BaseCommand):
    help = (
        "Make N realistic runs (with their masks, overlays and thumbnails) for demos and "
        "benchmarks, spread over teammates and the last 18 months. See segmentation/seed.py."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("n", type=int, help="How many runs to make.")
        parser.add_argument("--users", type=int, default=5, help="Teammates (default 5).")
        parser.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
        parser.add_argument(
            "--images",
            type=Path,
            default=None,
            help=f"Folder of images to use (default {default_images_dir()}).",
        )
        parser.add_argument(
            "--password",
            default=None,
            help="Let the teammates it makes sign in with this password (by default they "
            "cannot sign in: their runs are there to look at).",
        )
        parser.add_argument(
            "--fast",
            action="store_true",
            help="Hard-link each run's files to a shared first copy instead of writing copies "
            "(quicker, no disk growth; each run still has files of its own names).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        n = options["n"]
        if n < 0:
            raise CommandError("N must be 0 or more.")
        if not 1 <= options["users"] <= 1000:
            raise CommandError("--users must be between 1 and 1000.")
        step = max(1000, n // 20)

        def progress(done: int, total: int) -> None:
            if done % step < 1000 or done == total:
                self.stdout.write(f"  {done:,} of {total:,} runs")

        try:
            report = seed_runs(
                n,
                users=options["users"],
                seed=options["seed"],
                images_dir=options["images"],
                fast=options["fast"],
                progress=progress if options["verbosity"] >= 1 else None,
                password=options["password"],
            )
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from None

        statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(report.statuses.items()))
        self.stdout.write(
            f"Made {report.runs:,} runs ({statuses}) with {report.masks:,} masks and "
            f"{report.files:,} files ({report.linked:,} of them hard links) "
            f"in {report.seconds:.1f} s ({report.render_seconds:.1f} s drawing "
            f"{report.variants} mask variants on {len(report.images)} images)."
        )
        if report.users_created and options["password"]:
            self.stdout.write(
                f"Created teammates {', '.join(report.users_created)}: sign in at "
                f"{reverse('login')} as any of them with the password you gave (--password)."
            )
        elif report.users_created:
            self.stdout.write(
                f"Created teammates {', '.join(report.users_created)}. They cannot sign in "
                f"(seed again with --password to give new ones a password, or set one on the "
                f"Team page); sign in as yourself to see their runs."
            )
        self.stdout.write(f"Runs belong to: {', '.join(report.users)}.")
