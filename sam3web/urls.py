from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "sam3web administration"
admin.site.site_title = "sam3web"

urlpatterns = [
    path("", include("api.urls")),
    path("", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("", include("segmentation.engines.runflow.urls")),
    path("", include("segmentation.urls")),
]
