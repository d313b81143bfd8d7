from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("setup/", views.first_admin, name="first_admin"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/new/", views.run_new, name="run_new"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<uuid:run_id>/status/", views.run_status, name="run_status"),
    path("runs/<uuid:run_id>/resubmit/", views.run_resubmit, name="run_resubmit"),
    path("images/<int:image_id>/", views.image_file, name="image_file"),
    path("images/<int:image_id>/thumb/", views.image_thumbnail, name="image_thumbnail"),
]
