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
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from accounts import team
from accounts.models import ApiToken

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


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Admins see every teammate's tokens and can revoke one (a token that leaked, say).
    Tokens are made only on the API page: a token is shown once, to its owner."""

    list_display = ["name", "user", "hint", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username", "hint"]
    readonly_fields = ["user", "name", "hint", "created_at", "last_used_at", "revoked_at"]
    exclude = ["digest"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(
            request, f"{count} token(s) revoked: requests made with them are refused."
        )
