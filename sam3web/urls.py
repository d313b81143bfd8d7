from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from sam3web.health import healthz

admin.site.site_header = "sam3web administration"
admin.site.site_title = "sam3web"

# Errors raised before a view runs (the database gone while loading the session) included.
handler500 = "sam3web.middleware.server_error"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("", include("api.urls")),
    path("", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("", include("segmentation.engines.runflow.urls")),
    path("", include("segmentation.urls")),
]
