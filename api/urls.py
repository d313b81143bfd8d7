from __future__ import annotations

from django.urls import URLPattern, path, re_path

from api import docs, openapi, views

# Runflow's paths, as its clients call them: no trailing slashes.
urlpatterns: list[URLPattern] = [
    path("v1/models/meta/sam-3/image/runs", views.create_run, name="api_create_run"),
    path("v1/models/<path:model_id>/runs", views.create_run, name="api_create_model_run"),
    path("v1/auth/me", views.auth_me, name="api_me"),
    path("v1/runs", views.run_list, name="api_runs"),
    # Before the run's own path, which would take "statuses" for an id.
    path("v1/runs/statuses", views.run_statuses, name="api_run_statuses"),
    path("v1/runs/<str:run_id>", views.run_detail, name="api_run"),
    path("v1/runs/<str:run_id>/callback", views.run_callbacks, name="api_run_callbacks"),
    path(
        "v1/runs/<str:run_id>/callback-redeliveries",
        views.run_callback_redelivery,
        name="api_run_redelivery",
    ),
    path("v1/files/<str:token>/<str:name>", views.api_file, name="api_file"),
    path("v1/openapi.json", openapi.openapi_json, name="api_openapi"),
    path("api/docs/", docs.api_docs, name="api_docs"),
    # [\s\S]: a path holding a newline (%0A) is still ours to answer, in JSON.
    re_path(r"^v1/(?P<rest>[\s\S]*)$", views.api_not_found),
]
