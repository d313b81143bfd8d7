"""Disk full for temporary files: uploads spool to FILE_UPLOAD_TEMP_DIR, here a real 2 MiB
tmpfs. The person gets a sentence that says so, and nothing is half-written: no batch row, no
temporary file left behind."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from segmentation.models import Batch, BatchItem

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_tmp(tmp_path: Path, settings) -> Iterator[Path]:
    """A 2 MiB tmpfs as the folder uploads spool to (skipped where mounting is not allowed)."""
    where = tmp_path / "tiny"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        settings.FILE_UPLOAD_TEMP_DIR = str(where)
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_batch_upload_that_fills_the_disk_is_refused_and_leaves_nothing(
    signed_in, tiny_tmp: Path
) -> None:
    photos = [SimpleUploadedFile(f"{i}.jpg", os.urandom(900_000)) for i in range(3)]
    response = signed_in.post(
        "/batches/new/",
        {"concepts": "cat", "max_masks": "3", "output_format": "png", "images": photos},
    )
    page = response.content.decode()
    assert response.status_code == 413
    assert "The server has no room left for this upload right now" in page
    assert 'name="concepts"' in page  # the form again, the concepts kept
    assert not Batch.objects.exists() and not BatchItem.objects.exists()
    assert list(tiny_tmp.iterdir()) == []  # the spooled parts went with the refusal
    # Once there is room again, the same form works: nothing was left in the way.
    small = SimpleUploadedFile("small.png", b"\x89PNG not really")
    again = signed_in.post("/batches/new/", {"concepts": "cat", "images": [small]})
    assert "no room left" not in again.content.decode()


def test_an_image_that_fills_the_disk_gets_an_error_beside_the_field(
    signed_in, tiny_tmp: Path
) -> None:
    """The run form: an image larger than uploads kept in memory (2 MiB) spools to the full
    disk; the form comes back with the sentence beside the image field, and no run."""
    from segmentation.models import Run, SourceImage

    big = SimpleUploadedFile("big.jpg", os.urandom(3 * 1024 * 1024), content_type="image/jpeg")
    response = signed_in.post("/runs/new/", {"prompt": "cat", "image": big})
    page = response.content.decode()
    assert response.status_code == 400  # as for any form error
    assert "The server has no room left for this upload right now" in page
    assert 'id="id_image"' in page  # the form again
    assert not Run.objects.exists() and not SourceImage.objects.exists()
    assert list(tiny_tmp.iterdir()) == []
