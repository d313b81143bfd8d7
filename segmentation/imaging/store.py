"""Keeping an image that passed intake: one ``SourceImage`` per content, with its thumbnail and,
when it is larger than pages show it, its display copy (``display.render_display``)."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models.fields.files import FieldFile
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from segmentation.imaging.decode import ImageRejected
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

# A full disk (or quota) under a filesystem storage: nothing wrong with the file, try later.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
# What a bucket answers when the fault is its own or the way to it, not the object asked for.
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
MSG_STORAGE_DOWN = (
    "The image could not be stored: sam3web's file storage cannot be reached right now. "
    "Nothing was saved; please try again in a minute."
)
MSG_NO_ROOM = (
    "The server has no room left for files right now, so nothing was saved. "
    "Please try again later, or tell your admin."
)


def storage_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the storage cannot take or give files right now (a bucket that
    cannot be reached or answers with an error of its own, a full disk), rather than that one
    file is missing or bad: the work is worth trying again later, unchanged."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return str(error.get("Code", "")) not in _MISSING
    if isinstance(exc, BotoCoreError | Boto3Error):
        return True
    return isinstance(exc, OSError) and exc.errno in _NO_ROOM


def no_room(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def refusing_when_unavailable() -> Iterator[None]:
    """Turns a storage that cannot take files now into ImageRejected, so forms and the API
    answer with a sentence (never a 500); what was stored before the failure is the caller's
    to remove."""
    try:
        yield
    except Exception as exc:
        if not storage_unavailable(exc):
            raise
        logger.warning("Storage unavailable: %s: %s", type(exc).__name__, exc)
        if no_room(exc):
            raise ImageRejected(MSG_NO_ROOM, "no_room") from exc
        raise ImageRejected(MSG_STORAGE_DOWN, "storage_unavailable") from exc


def signed_url(file: FieldFile, content_type: str) -> str:
    """A link straight to the file in the bucket, signed for SAM3WEB_S3_URL_TTL seconds, that
    makes the bucket answer with our content type; "" for a storage that cannot make one (the
    filesystem: the app streams the file itself)."""
    storage = file.storage
    if not getattr(storage, "querystring_auth", False) or not file.name:
        return ""
    ttl = settings.SAM3WEB_S3_URL_TTL
    url: str = storage.url(  # type: ignore[call-arg]
        file.name,
        parameters={
            "ResponseContentType": content_type,
            # The link itself is new on every redirect; what it names never changes.
            "ResponseCacheControl": f"private, max-age={ttl}, immutable",
        },
        expire=ttl,
    )
    return url


def read_file(file: FieldFile) -> bytes:
    """A stored file's bytes; FileNotFoundError when it is missing. From a bucket this is one
    GET: django-storages' own reading asks for the object's size twice first (a HEAD to open
    it, another to download it), which triples the round trips for a small file such as a
    mask, and a dataset reads thousands of them."""
    storage = file.storage
    if not isinstance(storage, S3Storage):
        with file.open("rb") as f:
            data: bytes = f.read()
        return data
    # The key as django-storages makes it from the name (its location prefix, if any).
    key = storage._normalize_name(clean_name(file.name))
    try:
        body: bytes = storage.bucket.Object(key).get()["Body"].read()
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in _MISSING:
            raise FileNotFoundError(f"File does not exist: {file.name}") from exc
        raise
    return body


def store_image(result: IntakeResult, *, original_name: str) -> SourceImage:
    """The stored image for this content; the same photo uploaded twice is stored once.
    Raises ImageRejected when the storage cannot take it now, having removed what it wrote."""
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
    try:
        with refusing_when_unavailable():
            _save_files(image, result)
    except ImageRejected:
        _remove_files(image)
        raise
    try:
        with transaction.atomic():
            image.save()
    except IntegrityError:
        # Someone stored the same content a moment ago: use theirs, drop our files.
        _remove_files(image)
        return SourceImage.objects.get(sha256=result.sha256)
    except BaseException:
        _remove_files(image)  # no row names them
        raise
    return image


def _save_files(image: SourceImage, result: IntakeResult) -> None:
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


def _remove_files(image: SourceImage) -> None:
    for field in (image.file, image.thumbnail, image.display):
        if field.name:
            try:
                field.delete(save=False)
            except Exception as exc:
                if not storage_unavailable(exc):
                    raise
                # Still unreachable: no row names the file; `manage.py prune` finds it later.
                logger.warning("Could not remove %s: %s", field.name, exc)


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
        rendition = _rendition(data, image.sha256)
        if rendition is None:
            return image.file, image.content_type
        name = image.display.storage.save(
            image.display.field.generate_filename(
                image, f"{image.sha256[:16]}.{rendition.extension}"
            ),
            ContentFile(rendition.data),
        )
    except Exception as exc:
        if not (isinstance(exc, OSError) or storage_unavailable(exc)):
            raise
        # The page still gets the original; the copy is made on a later view.
        logger.warning("No display copy of image %s now: %s", image.pk, exc)
        return image.file, image.content_type
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
