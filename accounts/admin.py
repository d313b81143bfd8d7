"""Django's admin, for superusers: the team's own models only. Task results (the worker's
bookkeeping) and groups (sam3web uses none) mean nothing to a team, so they are left out;
sessions and content types were never registered. The user form keeps the team page's one
rule that matters for everyone: the last active admin stays an active admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django_tasks_db.models import DBTaskResult

from accounts import team

for model in (DBTaskResult, Group):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


class TeamUserChangeForm(UserChangeForm[Any]):
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # The instance still holds the saved values here: the form's are applied after clean().
        was_admin = self.instance.pk and team.is_admin(self.instance)
        stays_admin = cleaned.get("is_active") and cleaned.get("is_staff")
        if was_admin and not stays_admin and team.active_admin_count() <= 1:
            raise ValidationError(
                f"{self.instance.get_username()} is the team's last active admin: they must stay "
                "active and staff. Make someone else an admin first."
            )
        return cleaned


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class TeamUserAdmin(UserAdmin):
    form = TeamUserChangeForm
