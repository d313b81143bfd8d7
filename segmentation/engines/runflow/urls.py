from __future__ import annotations

from django.urls import URLPattern, path

from segmentation.engines.runflow.callbacks import runflow_callback

urlpatterns: list[URLPattern] = [
    path(
        "callbacks/runflow/<uuid:run_id>/<str:token>/",
        runflow_callback,
        name="runflow_callback",
    ),
]
