"""What a public link (``/s/<token>/…``) serves; every view takes the token."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
