"""What the accounts app keeps beside Django's users: the one-time code that guards the
first-admin page of a fresh install."""

from __future__ import annotations

from django.db import models


class SetupCode(models.Model):
    """The setup code of an install that has no user yet: one row at most (always pk 1), kept
    in the database so that every web process and every restart sees the same code. Deleted
    when the first admin is made with it.

    The wrong tries live on the same row, so the rate limit holds across processes too."""

    SINGLETON = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON, editable=False)
    # Stored as typed by nobody: upper case, no separators (see accounts.setup.normalize).
    code = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the wrong tries inside the current window were made (ISO timestamps, oldest first).
    wrong_tries = models.JSONField(default=list, blank=True)
    # While set and in the future, every try is refused, the right code too.
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return "Setup code"
