"""What the accounts app keeps beside Django's users: the one-time code that guards the
first-admin page of a fresh install, API tokens, budgets and callback signing secrets."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


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


class ApiToken(models.Model):
    """A teammate's key to sam3web's API (``sam3web_`` and 43 random characters). Only its
    SHA-256 is kept: the token is shown once, when it is made. A fast hash is enough for 256
    random bits (nobody can guess one to match), and it lets every request find its token with
    one indexed lookup."""

    PREFIX = "sam3web_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters, so a person can tell their tokens apart ("sam3web_AbC…").
    hint = models.CharField(max_length=20, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @staticmethod
    def digest_of(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()

    @classmethod
    def issue(cls, user: Any, name: str) -> tuple[ApiToken, str]:
        """A new token for ``user``: the row, and the token itself (never stored)."""
        token = cls.PREFIX + secrets.token_urlsafe(32)
        row = cls.objects.create(
            user=user, name=name, digest=cls.digest_of(token), hint=token[: len(cls.PREFIX) + 4]
        )
        return row, token

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class Team(models.Model):
    """The team as a whole: one row (pk 1), locked while a run is charged against the team's
    monthly budget, so two teammates' runs at the same moment cannot both take its last
    dollar."""

    SINGLETON = 1
    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON, editable=False)

    def __str__(self) -> str:
        return "Team"


# How long the old secret keeps signing after a rotation.
ROTATION_GRACE = dt.timedelta(hours=24)


class Profile(models.Model):
    """What sam3web keeps about a teammate beside Django's user: their monthly budget and the
    secret that signs the callbacks their API runs send. Made when first needed."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="profile"
    )
    # Dollars a month, runs of every kind; NULL: no limit.
    monthly_budget = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    # Shown to its teammate (they put it in their receiver), so kept as it is, like Runflow's.
    callback_secret = models.CharField(max_length=80)
    # After a rotation the old secret keeps signing until previous_until: receivers that know
    # only the old one keep working while the new one is rolled out.
    previous_secret = models.CharField(max_length=80, blank=True)
    previous_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Profile of {self.user}"

    @staticmethod
    def new_secret() -> str:
        return "whsec_" + secrets.token_urlsafe(32)

    @classmethod
    def of(cls, user: Any) -> Profile:
        profile, _made = cls.objects.get_or_create(
            user=user, defaults={"callback_secret": cls.new_secret()}
        )
        return profile

    def signing_secret(self, now: dt.datetime | None = None) -> str:
        """The secret that signs callbacks now."""
        now = now or timezone.now()
        if self.previous_secret and self.previous_until and self.previous_until > now:
            return self.previous_secret
        return self.callback_secret

    @property
    def in_grace(self) -> bool:
        """Whether callbacks are still signed with the secret from before the last rotation."""
        return self.signing_secret() != self.callback_secret

    def rotate(self, grace: dt.timedelta = ROTATION_GRACE) -> None:
        self.previous_secret = self.callback_secret
        self.previous_until = timezone.now() + grace
        self.callback_secret = self.new_secret()
        self.save(update_fields=["callback_secret", "previous_secret", "previous_until"])

    def end_grace(self) -> None:
        """The previous secret stops at once (it leaked, say)."""
        self.previous_secret = ""
        self.previous_until = None
        self.save(update_fields=["previous_secret", "previous_until"])
