from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from segmentation.views import compare, exports, files, history, reuse, runs, share, usage, viewer

urlpatterns: list[URLPattern | URLResolver] = [
    path("", runs.home, name="home"),
    path("runs/", history.run_list, name="run_list"),
    path("runs/new/", runs.run_new, name="run_new"),
    path("runs/live/", history.run_list_live, name="run_list_live"),
    path("runs/compare/", compare.compare, name="run_compare"),
    path("usage/", usage.usage, name="usage"),
    path("runs/<uuid:run_id>/", runs.run_detail, name="run_detail"),
    path("runs/<uuid:run_id>/status/", runs.run_status, name="run_status"),
    path("runs/<uuid:run_id>/delete/", runs.run_delete, name="run_delete"),
    path("runs/<uuid:run_id>/reuse/", reuse.run_reuse, name="run_reuse"),
    path("runs/<uuid:run_id>/share/", share.run_share, name="run_share"),
    path("runs/<uuid:run_id>/unshare/", share.run_unshare, name="run_unshare"),
    # Public, read-only links made by a run's owner (no sign-in): see views.share.
    path("s/<str:token>/", include("segmentation.share_urls")),
    path("runs/<uuid:run_id>/resubmit/", runs.run_resubmit, name="run_resubmit"),
    path("runs/<uuid:run_id>/check-again/", runs.run_check_again, name="run_check_again"),
    path("runs/<uuid:run_id>/retry-copy/", runs.run_retry_copy, name="run_retry_copy"),
    path("runs/<uuid:run_id>/overlay.png", files.run_file, {"kind": "overlay"}, name="run_overlay"),
    path("runs/<uuid:run_id>/thumb.jpg", files.run_file, {"kind": "thumb"}, name="run_thumb"),
    path("runs/<uuid:run_id>/preview/", files.run_file, {"kind": "preview"}, name="run_preview"),
    path("runs/<uuid:run_id>/masks/<int:number>.png", files.mask_file, name="mask_file"),
    path("runs/<uuid:run_id>/viewer.json", viewer.viewer_data, name="viewer_data"),
    path("runs/<uuid:run_id>/masks/<int:number>.crop.png", viewer.mask_crop, name="mask_crop"),
    path("runs/<uuid:run_id>/export/<str:fmt>", exports.export, name="run_export"),
    path("images/<int:image_id>/", files.image_file, name="image_file"),
    path("images/<int:image_id>/display/", files.image_display, name="image_display"),
    path("images/<int:image_id>/thumb/", files.image_thumbnail, name="image_thumbnail"),
]
