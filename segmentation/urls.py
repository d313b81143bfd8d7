from __future__ import annotations

from django.urls import include, path

from . import (
    compare_views,
    export_views,
    reuse_views,
    share_views,
    usage_views,
    viewer_views,
    views,
)

urlpatterns = [
    path("", views.home, name="home"),
    path("setup/", views.first_admin, name="first_admin"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/new/", views.run_new, name="run_new"),
    path("runs/live/", views.run_list_live, name="run_list_live"),
    path("runs/compare/", compare_views.compare, name="run_compare"),
    path("usage/", usage_views.usage, name="usage"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<uuid:run_id>/status/", views.run_status, name="run_status"),
    path("runs/<uuid:run_id>/delete/", views.run_delete, name="run_delete"),
    path("runs/<uuid:run_id>/reuse/", reuse_views.run_reuse, name="run_reuse"),
    path("runs/<uuid:run_id>/share/", share_views.run_share, name="run_share"),
    path("runs/<uuid:run_id>/unshare/", share_views.run_unshare, name="run_unshare"),
    # Public, read-only links made by a run's owner (no sign-in): see share_views.
    path("s/<str:token>/", include("segmentation.share_urls")),
    path("runs/<uuid:run_id>/resubmit/", views.run_resubmit, name="run_resubmit"),
    path("runs/<uuid:run_id>/check-again/", views.run_check_again, name="run_check_again"),
    path("runs/<uuid:run_id>/retry-copy/", views.run_retry_copy, name="run_retry_copy"),
    path("runs/<uuid:run_id>/overlay.png", views.run_file, {"kind": "overlay"}, name="run_overlay"),
    path("runs/<uuid:run_id>/thumb.jpg", views.run_file, {"kind": "thumb"}, name="run_thumb"),
    path("runs/<uuid:run_id>/preview/", views.run_file, {"kind": "preview"}, name="run_preview"),
    path("runs/<uuid:run_id>/masks/<int:number>.png", views.mask_file, name="mask_file"),
    path("runs/<uuid:run_id>/viewer.json", viewer_views.viewer_data, name="viewer_data"),
    path(
        "runs/<uuid:run_id>/masks/<int:number>.crop.png",
        viewer_views.mask_crop,
        name="mask_crop",
    ),
    path(
        "runs/<uuid:run_id>/export/<str:fmt>",
        export_views.export,
        name="run_export",
    ),
    path(
        "callbacks/runflow/<uuid:run_id>/<str:token>/",
        views.runflow_callback,
        name="runflow_callback",
    ),
    path("images/<int:image_id>/", views.image_file, name="image_file"),
    path("images/<int:image_id>/thumb/", views.image_thumbnail, name="image_thumbnail"),
]
