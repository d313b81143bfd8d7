from __future__ import annotations

from django.contrib import admin

from segmentation.models import Batch, Run, SourceImage


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "status", "provider_run_id", "created_at"]
    list_filter = ["status"]
    search_fields = ["id", "provider_run_id", "input__prompt"]
    raw_id_fields = ["image", "owner", "parent", "token", "batch"]
    readonly_fields = ["created_at", "updated_at", "submitted_at"]


@admin.register(SourceImage)
class SourceImageAdmin(admin.ModelAdmin):
    list_display = ["id", "original_name", "width", "height", "content_type", "created_at"]
    search_fields = ["sha256", "original_name"]


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "owner", "state", "created_at", "started_at"]
    list_filter = ["state"]
    search_fields = ["name"]
    raw_id_fields = ["owner", "source_run"]
    readonly_fields = ["created_at", "started_at", "canceled_at", "intake_total", "intake_done"]
