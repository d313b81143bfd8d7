"""Changing who is on the team: disabling and re-enabling accounts, making and unmaking admins,
with the rules that keep a team from locking itself out. An admin is a user with ``is_staff``
(what the app checks); being made one also makes them a superuser, as the first admin is, so
Django's admin works for them, and stopping clears both.

Accounts are never deleted here: a disabled teammate cannot sign in (Django refuses inactive
users, and their open sessions stop at the next request), nor can their API tokens be used
(the API checks the account on every request), but their runs stay theirs.

Budgets: an admin sets each teammate's monthly budget in dollars, or lifts it (no limit);
``accounts.budgets`` enforces it on every new run."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from accounts.models import Profile
from segmentation.usage import money


@dataclass(frozen=True)
class Change:
    """One thing an admin can do to an account: the verb for buttons and the confirm page."""

    name: str
    button: str
    confirm: bool  # asked first: it takes something away


CHANGES = {
    "disable": Change("disable", "Disable", confirm=True),
    "enable": Change("enable", "Re-enable", confirm=False),
    "promote": Change("promote", "Make admin", confirm=False),
    "demote": Change("demote", "Remove admin", confirm=True),
}


@dataclass(frozen=True)
class Outcome:
    user: Any
    message: str
    changed: bool  # False when the account already was that way


class TeamRuleError(Exception):
    """The change was refused; the message says why."""


def is_admin(user: Any) -> bool:
    return bool(user.is_active and user.is_staff)


def refusal(actor: Any, target: Any, change: str, active_admins: int) -> str:
    """Why ``actor`` may not make ``change`` to ``target`` (empty when they may). The rules:
    only an active admin changes the team; the last active admin stays one and stays active
    (else nobody could ever add or enable anyone again); nobody disables or demotes
    themselves (another admin must, so a slip cannot cost anyone their own access)."""
    name = target.get_username()
    if not is_admin(actor):
        return "Only an admin can change the team."
    takes_away = change in ("disable", "demote")
    if takes_away and is_admin(target) and active_admins <= 1:
        verb = "disabled" if change == "disable" else "demoted"
        return (
            f"{name} is the team's last active admin and cannot be {verb}. "
            "Make someone else an admin first."
        )
    if takes_away and target.pk == actor.pk:
        verb = "disable your own account" if change == "disable" else "remove your own admin role"
        return f"You cannot {verb}. Ask another admin to do it."
    return ""


def active_admin_count() -> int:
    return get_user_model().objects.filter(is_active=True, is_staff=True).count()


def apply(actor: Any, target_pk: int, change: str) -> Outcome:
    """Make the change, and say what to tell the admin. Raises TeamRuleError
    when a rule refuses it, and the model's DoesNotExist for an unknown account.

    The admins' rows are locked first, so two admins demoting each other at the same moment
    cannot both succeed and leave the team with none."""
    if change not in CHANGES:
        raise ValueError(f"unknown change {change!r}")
    User = get_user_model()
    with transaction.atomic():
        admins = {
            u.pk: u for u in User.objects.select_for_update().filter(is_active=True, is_staff=True)
        }
        # The actor as the database has them now, not as the request found them.
        current = admins.get(actor.pk) or User.objects.get(pk=actor.pk)
        target = User.objects.select_for_update().get(pk=target_pk)
        why = refusal(current, target, change, len(admins))
        if why:
            raise TeamRuleError(why)
        name = target.get_username()
        if change in ("disable", "enable"):
            active = change == "enable"
            if target.is_active == active:
                state = "active" if active else "disabled"
                return Outcome(target, f"{name} was already {state}.", changed=False)
            target.is_active = active
            target.save(update_fields=["is_active"])
            if active:
                return Outcome(target, f"{name} can sign in again.", changed=True)
            return Outcome(
                target,
                f"{name} is disabled: they cannot sign in, any session they have open ends, "
                "and their API tokens stop working. Their runs stay.",
                changed=True,
            )
        admin = change == "promote"
        if target.is_staff == admin and target.is_superuser == admin:
            was = "was already" if admin else "was not"
            return Outcome(target, f"{name} {was} an admin.", changed=False)
        target.is_staff = target.is_superuser = admin
        target.save(update_fields=["is_staff", "is_superuser"])
        if admin:
            return Outcome(target, f"{name} is now an admin: they can manage the team.", True)
        return Outcome(target, f"{name} is no longer an admin.", changed=True)


# --- budgets ------------------------------------------------------------------------------------

# Profile.monthly_budget's shape: 10 digits, 2 of them cents.
MAX_BUDGET = Decimal("99999999.99")


def dollars(text: str) -> Decimal | None:
    """An amount of dollars as a person types it ("25", "12.50", "$8"), or None for no limit
    ("" or "none"). ValueError, with a message for that person, for anything else: a negative
    amount, fractions of a cent, or commas (is "12,50" twelve dollars fifty, or 1,250?)."""
    raw = text.strip()
    if raw.lower() in ("", "none"):
        return None
    if "," in raw:
        raise ValueError("Write the amount without commas, like 1000 or 12.50.")
    try:
        value = Decimal(raw.removeprefix("$").strip())
    except InvalidOperation:
        raise ValueError(
            f"“{raw}” is not an amount of dollars: write it like 25 or 12.50."
        ) from None
    if not value.is_finite():
        raise ValueError(f"“{raw}” is not an amount of dollars: write it like 25 or 12.50.")
    if value < 0:
        raise ValueError(
            "A budget cannot be negative: write 0 to stop all runs, or leave it empty."
        )
    if value != value.quantize(Decimal("0.01")):
        raise ValueError("Dollars and cents only: at most 2 digits after the point.")
    if value > MAX_BUDGET:
        raise ValueError(f"At most {money(MAX_BUDGET)}.")
    return value.quantize(Decimal("0.01"))


def set_budget(user: Any, amount: Decimal | None) -> str:
    """Set (or, with None, lift) a teammate's monthly budget; what to tell the admin. The next
    run checks it (under the Profile row's lock: see budgets.reserve)."""
    profile = Profile.of(user)
    Profile.objects.filter(pk=profile.pk).update(monthly_budget=amount)
    name = user.get_username()
    if amount is None:
        return f"{name} has no monthly budget now: their runs are not limited."
    return f"{name}’s monthly budget is now {money(amount)}."
