"""Exports kept in the bucket. With object storage, a download (a run's masks.zip, JSON, COCO or
composite; a batch's dataset) is written to the bucket under ``exports/`` and the browser is
sent there by a link signed for SAM3WEB_S3_URL_TTL seconds, so the web servers never carry the
bytes of a large dataset to the browser and nothing but temporary spool files touches their
disk. Without a bucket the views stream the file themselves, as before.

Each download writes an object of its own: what is exported changes with every review decision,
finished run and viewer setting, so there is never a stored copy that could be stale. The
objects are short-lived: ``manage.py prune`` removes those older than EXPORTS_KEPT (the link to
one lives a few minutes), and deleting a run removes its exports at once.

Keys: ``exports/runs/<run id>/<random>.<ext>`` and ``exports/batches/<batch id>/<random>.<ext>``;
the download's file name travels in the signed link (the bucket answers with our
Content-Disposition), so keys hold nothing a teammate typed."""

from __future__ import annotations

import datetime as dt
import io
import logging
import posixpath
import secrets
from collections.abc import Iterable
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.http import HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header

from segmentation.imaging.store import storage_unavailable

logger = logging.getLogger(__name__)

FOLDER = "exports"
# An export's link lives SAM3WEB_S3_URL_TTL seconds (minutes); a download begun on it may run
# a while longer. Past this, nothing can be reading it.
EXPORTS_KEPT = dt.timedelta(hours=1)
MSG_STORAGE_DOWN = (
    "The export could not be made: sam3web's file storage cannot be reached right now. "
    "Please try again in a minute."
)


def in_bucket() -> bool:
    """Whether files live in a bucket that can sign links (the filesystem cannot)."""
    return bool(getattr(default_storage, "querystring_auth", False))


def folder(kind: str, pk: Any) -> str:
    """``exports/runs/<id>`` or ``exports/batches/<id>``: everything exported of one row."""
    return f"{FOLDER}/{kind}/{pk}"


class _Chunks(io.RawIOBase):
    """A generator of bytes as a file to read, so a dataset is uploaded while it is built,
    one part at a time, never whole in memory or on disk."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def chunks_file(chunks: Iterable[bytes]) -> IO[bytes]:
    """``chunks`` (a dataset's stream) as a file ``keep`` can upload part by part."""
    return io.BufferedReader(_Chunks(chunks), buffer_size=1 << 20)


def keep(
    kind: str, pk: Any, *, filename: str, content_type: str, content: IO[bytes], log: str
) -> HttpResponseBase:
    """Write ``content`` to the bucket as an export of row ``pk`` and answer with a redirect to
    a signed link that downloads it as ``filename``; a 503 with the reason when the bucket
    cannot take it now. ``log`` names the row in the log line (``run=<id>``)."""
    extension = filename.split(".", 1)[1] if "." in filename else "bin"
    name = posixpath.join(folder(kind, pk), f"{secrets.token_urlsafe(16)}.{extension}")
    upload = File(content, name)
    upload.content_type = content_type  # type: ignore[attr-defined]  # what django-storages sends
    try:
        name = default_storage.save(name, upload)
    except Exception as exc:
        if not storage_unavailable(exc):
            raise
        return storage_down(exc, log=log)
    ttl = settings.SAM3WEB_S3_URL_TTL
    url = default_storage.url(  # type: ignore[call-arg]
        name,
        parameters={
            "ResponseContentType": content_type,
            "ResponseContentDisposition": content_disposition_header(True, filename),
            "ResponseCacheControl": "private, no-store",
        },
        expire=ttl,
    )
    logger.info("%s event=exported file=%s", log, name)
    redirect = HttpResponseRedirect(url)
    # Every download is built anew: the redirect is never reused.
    redirect["Cache-Control"] = "private, no-store"
    return redirect


def storage_down(exc: BaseException, *, log: str) -> HttpResponse:
    """The answer to a download while the storage cannot give the masks or take the export."""
    logger.warning("%s event=export_failed reason=%s", log, type(exc).__name__)
    refused = HttpResponse(
        MSG_STORAGE_DOWN + "\n", status=503, content_type="text/plain; charset=utf-8"
    )
    refused["Retry-After"] = "60"
    refused["Cache-Control"] = "no-store"
    return refused


def remove(kind: str, pk: Any) -> None:
    """Remove every export of one row (a run being deleted). A bucket that cannot be reached
    leaves them to ``manage.py prune``."""
    try:
        _dirs, files = default_storage.listdir(folder(kind, pk))  # files only: see keep()
        for file in files:
            default_storage.delete(posixpath.join(folder(kind, pk), file))
    except FileNotFoundError:
        return  # nothing was ever exported
    except Exception as exc:
        if not (isinstance(exc, OSError) or storage_unavailable(exc)):
            raise
        logger.warning("Could not remove the exports of %s %s: %s", kind, pk, exc)
