"""The setup code: what stands between a fresh install's first-admin page and whoever reaches it
first. While the install has no user, one code exists (in the database, so every web process
and every restart shows the same one); ``manage.py setup_code`` prints it, and the first-admin
form asks for it. Wrong codes are rate limited for the whole install, not per address: an
attacker can change address, and the person setting up can wait a few minutes. The code works
once: it is deleted in the same transaction that makes the admin."""

from __future__ import annotations

import datetime as dt
import hmac
import math
import re
import secrets
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import SetupCode

# No 0/O, 1/I/L or U/V look-alikes: read off a terminal and typed without doubt.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTWXYZ"
GROUPS, GROUP_LENGTH = 3, 4  # 29**12: about 58 bits, against at most 5 guesses per window
# Spaces and every kind of dash someone may type (or a phone may substitute) are ignored.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212_.]+")


class SetupRefused(Exception):
    """The code typed was not accepted; the message says why, for beside the field."""


class SetupClosed(Exception):
    """The install already has a user: there is nothing to set up any more."""


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_LENGTH))


def normalize(typed: str) -> str:
    return _SEPARATORS.sub("", typed).upper()


def display(code: str) -> str:
    """ABCD-EFGH-JKMN: the code in groups, as printed and shown."""
    return "-".join(code[i : i + GROUP_LENGTH] for i in range(0, len(code), GROUP_LENGTH))


def needs_setup() -> bool:
    return not get_user_model().objects.exists()


def current_code() -> str | None:
    """The setup code to show, made if there is none yet; None once the install has a user
    (a code left over from before, e.g. when the admin was made with createsuperuser, goes)."""
    if not needs_setup():
        if SetupCode.objects.exists():
            SetupCode.objects.all().delete()
        return None
    return display(_row().code)


def _row(*, lock: bool = False) -> SetupCode:
    """The code's row, made on first use. Two processes making it at once: one insert wins,
    the other reads the winner's code."""
    rows = SetupCode.objects.select_for_update() if lock else SetupCode.objects
    row = rows.filter(pk=SetupCode.SINGLETON).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return SetupCode.objects.create(pk=SetupCode.SINGLETON, code=new_code())
    except IntegrityError:
        return rows.get(pk=SetupCode.SINGLETON)


def wait_text(seconds: float) -> str:
    """How long to wait, rounded up, in the largest unit that fits: "10 minutes", "1 second"."""
    if seconds >= 60:
        minutes = math.ceil(seconds / 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    whole = max(1, math.ceil(seconds))
    return f"{whole} second{'s' if whole != 1 else ''}"


def _refusal_for_wrong_code(row: SetupCode, now: dt.datetime) -> str:
    """Count a wrong try; the one that reaches the limit starts the cooldown."""
    window_start = now - dt.timedelta(seconds=settings.SAM3WEB_SETUP_WINDOW)
    tries = [t for t in map(dt.datetime.fromisoformat, row.wrong_tries) if t > window_start]
    tries.append(now)
    wrong = "That is not this install's setup code."
    if len(tries) >= settings.SAM3WEB_SETUP_MAX_WRONG:
        cooldown = settings.SAM3WEB_SETUP_COOLDOWN
        row.locked_until = now + dt.timedelta(seconds=cooldown)
        row.wrong_tries = []
        row.save(update_fields=["wrong_tries", "locked_until"])
        return f"{wrong} Too many wrong codes: wait {wait_text(cooldown)}, then try again."
    row.wrong_tries = [t.isoformat() for t in tries]
    row.save(update_fields=["wrong_tries"])
    left = settings.SAM3WEB_SETUP_MAX_WRONG - len(tries)
    if left <= 2:
        return f"{wrong} {left} more wrong tr{'y' if left == 1 else 'ies'} and setup pauses."
    return wrong


def attempt(typed: str, make_admin: Callable[[], Any] | None = None) -> Any:
    """Check the code typed; with ``make_admin``, also make the admin (its return value is
    returned) and delete the code, all in one transaction, so the code works exactly once.
    Raises SetupRefused (wrong code, or a cooldown holds: then even the right code is refused)
    or SetupClosed (someone got there first)."""
    refusal = ""
    with transaction.atomic():
        # Locking the row serializes tries: the count of wrong tries cannot be raced past.
        row = _row(lock=True)
        if not needs_setup():
            raise SetupClosed
        now = timezone.now()
        if row.locked_until and now < row.locked_until:
            wait = wait_text((row.locked_until - now).total_seconds())
            refusal = f"Too many wrong setup codes were tried. Wait {wait}, then try again."
        elif not hmac.compare_digest(normalize(typed).encode(), row.code.encode()):
            refusal = _refusal_for_wrong_code(row, now)
        elif make_admin is not None:
            made = make_admin()
            row.delete()
            return made
    # Raised after the transaction, so that the wrong try it counted is kept.
    if refusal:
        raise SetupRefused(refusal)
    return None
