from django.apps import AppConfig


class SegmentationConfig(AppConfig):
    name = "segmentation"
    verbose_name = "Segmentation"

    def ready(self) -> None:
        from django.tasks.signals import task_enqueued

        from segmentation import batches  # noqa: F401 - connects its signal receivers
        from segmentation.worker import notify_workers

        task_enqueued.connect(notify_workers, dispatch_uid="segmentation.notify_workers")
