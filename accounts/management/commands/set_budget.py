from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import budgets, team
from segmentation.usage import money


class Command(BaseCommand):
    help = (
        "Set a teammate's monthly budget in dollars (25, 12.50), or lift it with `none`. Every "
        "run they start, in the browser or through the API, counts against it; the Team page "
        "does the same."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="who (as they sign in)")
        parser.add_argument("dollars", help="an amount such as 25 or 12.50, or none for no limit")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        name = options["username"]
        field = User.USERNAME_FIELD
        person = User.objects.filter(**{field: name}).first()
        if person is None:
            # The team page refuses "ADA" beside "ada", so a name typed in another case still
            # names one account (unless one was made elsewhere: then the case must match).
            alike = list(User.objects.filter(**{f"{field}__iexact": name})[:2])
            if len(alike) != 1:
                raise CommandError(f"There is no teammate named {name!r}.")
            person = alike[0]
        try:
            amount = team.dollars(options["dollars"])
        except ValueError as refused:
            raise CommandError(f"{options['dollars']!r}: {refused}") from None
        self.stdout.write(team.set_budget(person, amount))
        self.stdout.write(f"Spent this month: {money(budgets.spent(person))}.")
