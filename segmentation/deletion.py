"""Deleting a run with everything that is only its own: rows and files.

The rows go in one transaction; the files are removed only once it has committed, so a
failed delete leaves a whole run behind, never a run whose files are gone. The source image
goes too when no other run uses it (images are stored once per content and shared).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from .models import Run

logger = logging.getLogger(__name__)


def delete_run(run_id: Any) -> bool:
    """Delete the run; False when it was already gone."""
    with transaction.atomic():
        run = Run.objects.filter(pk=run_id).select_related("image").first()
        if run is None:
            return False
        names = [f.name for f in (run.thumbnail, run.overlay, run.preview) if f]
        names += [name for name in run.masks.values_list("file", flat=True) if name]
        image = run.image
        run.delete()  # masks and callback deliveries go with it (CASCADE)
        if not Run.objects.filter(image_id=image.pk).exists():
            try:
                with transaction.atomic():
                    image.delete()
            except (ProtectedError, IntegrityError):
                # Someone started a run on this image in the meantime: it stays.
                pass
            else:
                names += [f.name for f in (image.file, image.thumbnail) if f]
        transaction.on_commit(lambda: remove_files(names))
    return True


def remove_files(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            # The rows are gone already; a file left behind is logged for an admin to remove.
            logger.exception("Could not remove %s", name)
