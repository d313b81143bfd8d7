from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from accounts import setup


class Command(BaseCommand):
    help = (
        "Print the one-time setup code that the first-admin page (/setup/) asks for, making one "
        "if needed; or say that this install already has an admin."
    )
    # bin/serve runs this on every start: no system checks, just one query or two and a line.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            code = setup.current_code()
        except DatabaseError as exc:
            raise CommandError(
                f"The database is not ready ({exc}). Run `manage.py migrate` first."
            ) from None
        if code is None:
            self.stdout.write("This install already has an admin.")
        else:
            self.stdout.write(f"Setup code: {code} (enter it at /setup/ to create the first admin)")
