"""What a public link (``/s/<token>/…``) serves; every view takes the token."""

from __future__ import annotations

from django.urls import URLPattern, path

from segmentation.views import share as share_views

urlpatterns: list[URLPattern] = [
    path("", share_views.shared_run, name="shared_run"),
    path("image", share_views.shared_image, name="shared_image"),
    path("image/display", share_views.shared_image_display, name="shared_image_display"),
    path("overlay.png", share_views.shared_overlay, name="shared_overlay"),
    path("viewer.json", share_views.shared_viewer_data, name="shared_viewer_data"),
    path("masks/<int:number>.png", share_views.shared_mask, name="shared_mask"),
    path("masks/<int:number>.crop.png", share_views.shared_mask_crop, name="shared_mask_crop"),
    path("export/<str:fmt>", share_views.shared_export, name="shared_export"),
]
