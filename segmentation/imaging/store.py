"""Keeping an image that passed intake: one ``SourceImage`` per content, with its thumbnail."""

from __future__ import annotations

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction

from segmentation.imaging.intake import IntakeResult
from segmentation.imaging.render import render_thumbnail
from segmentation.models import SourceImage


def store_image(result: IntakeResult, *, original_name: str) -> SourceImage:
    """The stored image for this content; the same photo uploaded twice is stored once."""
    existing = SourceImage.objects.filter(sha256=result.sha256).first()
    if existing is not None:
        return existing
    image = SourceImage(
        sha256=result.sha256,
        content_type=result.content_type,
        width=result.width,
        height=result.height,
        byte_size=len(result.data),
        converted=result.converted,
        original_name=original_name[:255],
    )
    # A small JPEG for lists, so a page of history does not download whole photos.
    image.thumbnail.save(
        f"{result.sha256[:16]}.jpg", ContentFile(render_thumbnail(result.data, None)), save=False
    )
    image.file.save(
        f"{result.sha256[:16]}.{result.extension}", ContentFile(result.data), save=False
    )
    try:
        with transaction.atomic():
            image.save()
    except IntegrityError:
        # Someone stored the same content a moment ago: use theirs, drop our files.
        image.file.delete(save=False)
        image.thumbnail.delete(save=False)
        return SourceImage.objects.get(sha256=result.sha256)
    return image
