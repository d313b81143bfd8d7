from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Signing in and the first admin of a fresh install (API tokens will live here too)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
