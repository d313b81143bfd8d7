"""`manage.py prune [--apply]`: what is safe to remove (see segmentation.prune). Without
--apply it only says what it would remove; the workers run it, applying, on a schedule."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from segmentation.prune import prune


class Command(BaseCommand):
    help = (
        "Remove staged images of forms never sent, old task rows, leftover batch uploads and "
        "files no row names. A dry run unless --apply is given."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--apply", action="store_true", help="Remove, instead of listing.")

    def handle(self, *, apply: bool, **options: Any) -> None:
        summary = prune(apply=apply)
        for line in summary.lines():
            self.stdout.write(line)
        if not apply:
            self.stdout.write("Nothing was removed (a dry run): --apply removes it.")
