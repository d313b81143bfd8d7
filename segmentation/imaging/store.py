"""Keeping an image that passed intake: one ``SourceImage`` per content, with its thumbnail and,
when it is larger than pages show it, its display copy (``display.render_display``)."""

from __future__ import annotations

import logging

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models.fields.files import FieldFile

from segmentation.imaging.display import (
    Rendition,
    content_type_of,
    display_size,
    needs_display,
    render_display,
)
from segmentation.imaging.intake import IntakeResult
from segmentation.imaging.render import render_thumbnail
from segmentation.models import SourceImage

logger = logging.getLogger(__name__)


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
    # A copy at display size for pages, so a run's page does not download the whole photo.
    rendition = _rendition(result.data, result.sha256)
    if rendition is not None:
        image.display.save(
            f"{result.sha256[:16]}.{rendition.extension}",
            ContentFile(rendition.data),
            save=False,
        )
    image.file.save(
        f"{result.sha256[:16]}.{result.extension}", ContentFile(result.data), save=False
    )
    try:
        with transaction.atomic():
            image.save()
    except IntegrityError:
        # Someone stored the same content a moment ago: use theirs, drop our files.
        for field in (image.file, image.thumbnail, image.display):
            if field.name:
                field.delete(save=False)
        return SourceImage.objects.get(sha256=result.sha256)
    return image


def display_file(image: SourceImage) -> tuple[FieldFile, str]:
    """The file pages show for ``image`` and its content type: the display copy, made now if
    the image is large and has none (images stored before display copies existed get theirs
    on first view), or the original when it is small enough (or a copy cannot be made), or
    always the original when copies are turned off (SAM3WEB_DISPLAY_SIZE=0)."""
    if display_size() <= 0:
        return image.file, image.content_type
    if image.display.name:
        return image.display, content_type_of(image.display.name)
    if not needs_display(image.width, image.height):
        return image.file, image.content_type
    try:
        with image.file.open("rb") as f:
            data = f.read()
    except OSError:
        logger.warning("Image %s could not be read for its display copy", image.pk, exc_info=True)
        return image.file, image.content_type
    rendition = _rendition(data, image.sha256)
    if rendition is None:
        return image.file, image.content_type
    name = image.display.storage.save(
        image.display.field.generate_filename(image, f"{image.sha256[:16]}.{rendition.extension}"),
        ContentFile(rendition.data),
    )
    # Two first views at once both make a copy: the first to record its copy wins, the other
    # removes its own file and shows the winner's.
    if SourceImage.objects.filter(pk=image.pk, display="").update(display=name):
        image.display.name = name
    else:
        image.display.storage.delete(name)
        theirs = SourceImage.objects.filter(pk=image.pk).values_list("display", flat=True).first()
        if not theirs:  # the image was deleted meanwhile
            return image.file, image.content_type
        image.display.name = name = theirs
    return image.display, content_type_of(name)


def _rendition(data: bytes, sha256: str) -> Rendition | None:
    """render_display, never in the way: an image that passed intake is taken and shown even
    if its copy cannot be made (pages then load the original)."""
    try:
        return render_display(data)
    except Exception:  # Pillow's encoders raise a wide set of types on odd inputs
        logger.warning("No display copy of image %s", sha256[:16], exc_info=True)
        return None
