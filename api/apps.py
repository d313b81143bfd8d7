from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    """sam3web's own /v1/: Runflow's API for the team's scripts, with per-teammate tokens."""

    name = "api"
    verbose_name = "API"

    def ready(self) -> None:
        from api.callbacks import recover, run_changed_receiver
        from segmentation.signals import run_changed, worker_starting

        run_changed.connect(run_changed_receiver, dispatch_uid="api.caller_callbacks")
        worker_starting.connect(recover, dispatch_uid="api.recover_callbacks")
