"""Receiving large uploads of many files: every file streams to a temporary file on disk,
whatever its size, and the upload stops once its files together pass a limit.

A view installs the handler before anything reads ``request.POST`` or ``request.FILES`` (so the
view is ``csrf_exempt``, or CsrfViewMiddleware would read the body first; ``csrf_protect`` it
after installing)::

    request.upload_handlers = [LimitedDiskUploadHandler(request, max_total_bytes=limit)]

After a stopped upload ``request.FILES`` is empty and ``request.upload_refused`` says why, in a
sentence for the person; otherwise it is "".
"""

from __future__ import annotations

import errno
import os
from contextlib import suppress
from typing import IO, TYPE_CHECKING, Any, cast

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest, QueryDict
from django.http.multipartparser import MultiPartParser
from django.utils.datastructures import MultiValueDict

from segmentation.imaging.decode import size_text

if TYPE_CHECKING:
    from django.http.request import _PostDataProtocol


NO_ROOM = (
    "The server has no room left for this upload right now, so none of its files were kept. "
    "Please try again later, or tell your admin."
)


class TemporaryUploadHandler(TemporaryFileUploadHandler):
    """Django's handler for files too large to keep in memory, which, when the disk its
    temporary files go to is full, stops the upload with a sentence for the person (in
    ``request.upload_refused``) instead of failing the request, and leaves no partial file.
    Every upload uses it (settings.FILE_UPLOAD_HANDLERS)."""

    refused = ""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().new_file(*args, **kwargs)
        except OSError as exc:
            self._full_disk(exc)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        try:
            return super().receive_data_chunk(raw_data, start)
        except OSError as exc:
            self._full_disk(exc)
            return None  # not reached: _full_disk raises

    def _full_disk(self, exc: OSError) -> None:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise exc
        self._refuse(NO_ROOM)
        raise StopUpload(connection_reset=False) from exc

    def _refuse(self, message: str) -> None:
        self.refused = message
        if self.request is not None:
            self.request.upload_refused = message  # type: ignore[attr-defined]
        upload = getattr(self, "file", None)
        if upload is not None:
            path = upload.temporary_file_path()
            with suppress(OSError):
                upload.close()  # flushing what it buffered fails again on a full disk
            with suppress(FileNotFoundError):
                os.unlink(path)  # never a half-written file left behind


def upload_refused(request: HttpRequest) -> str:
    """Why the request's upload was stopped, in a sentence for the person; "" if it was not."""
    return str(getattr(request, "upload_refused", ""))


class LimitedDiskUploadHandler(TemporaryUploadHandler):
    """TemporaryFileUploadHandler for every file, small ones too (Django's default keeps files
    under FILE_UPLOAD_MAX_MEMORY_SIZE in memory: 500 photos would all sit in RAM), stopping
    the upload once the files' bytes together pass ``max_total_bytes``."""

    def __init__(self, request: HttpRequest | None = None, *, max_total_bytes: int) -> None:
        super().__init__(request)
        self.max_total_bytes = max_total_bytes
        self.received = 0
        self._completed: list[UploadedFile] = []
        self._parsing = False
        if request is not None:
            request.upload_refused = ""  # type: ignore[attr-defined]

    def handle_raw_input(
        self,
        input_data: IO[bytes],
        META: dict[str, str],
        content_length: int,
        boundary: str,
        encoding: str | None = None,
    ) -> tuple[QueryDict, MultiValueDict[str, UploadedFile]] | None:
        """Parse with Django's own parser, then drop every file if the upload was stopped:
        Django keeps the files completed before a StopUpload in FILES, and a view must not
        take a part of what the person sent for all of it."""
        if self._parsing:  # the parser below asks its handlers too
            return None
        self._parsing = True
        handlers = self.request.upload_handlers if self.request is not None else [self]
        # The same stream the request hands its parser (the stubs type the two differently).
        stream = cast("_PostDataProtocol", input_data)
        post, files = MultiPartParser(META, stream, handlers, encoding).parse()
        if not self.refused:
            return post, files
        for upload in self._completed:
            upload.close()  # a closed temporary upload removes its file
        return post, MultiValueDict()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.max_total_bytes:
            self._refuse(
                f"The upload is larger than the {size_text(self.max_total_bytes)} limit, "
                "so none of its files were kept."
            )
            # The rest of the body is still read (and thrown away) so the browser gets the
            # page that says so, rather than a reset connection.
            raise StopUpload(connection_reset=False)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size: int) -> UploadedFile | None:
        upload = super().file_complete(file_size)
        if upload is not None:
            self._completed.append(upload)
        return upload
