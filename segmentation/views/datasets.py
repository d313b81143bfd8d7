"""A batch's dataset downloads: ``/batches/<id>/export/<fmt>``, see ``segmentation.datasets``.

Formats: ``coco.json``, ``coco.zip``, ``yolo.zip`` and ``masks.zip``; query ``min_score``
(0 to 1, default 0; empty is 0, as the batch page's form sends it cleared) and ``images`` (1
puts the images in; coco.json with images is coco.zip). Every signed-in teammate may download
(the middleware requires sign-in). Anything that makes no sense is a 4xx with the reason as
plain text, never a 500. The file is streamed: it starts at once and the server holds a few masks
at a time, however large the batch. With a bucket, the file is uploaded there as it is built and
the answer is a redirect to a short-lived signed link (``segmentation.stored_exports``).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import TooManyFieldsSent
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotFound,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from segmentation import datasets, stored_exports
from segmentation.models import Batch

MAX_QUERY_LENGTH = 1000


def _plain(response_class: type[HttpResponse], reason: str) -> HttpResponse:
    return response_class(reason + "\n", content_type="text/plain; charset=utf-8")


@require_GET
def batch_export(request: HttpRequest, batch_id: Any, fmt: str) -> HttpResponseBase:
    if fmt not in datasets.FORMATS:
        known = ", ".join(datasets.FORMATS)
        return _plain(HttpResponseNotFound, f"Unknown dataset format {fmt[:40]!r}: use {known}.")
    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None:
        return _plain(HttpResponseNotFound, f"There is no batch {batch_id}.")
    if len(request.META.get("QUERY_STRING", "")) > MAX_QUERY_LENGTH:
        return _plain(HttpResponseBadRequest, "The query string is too long.")
    try:
        options = datasets.parse_options(request.GET)
    except datasets.BadOptions as exc:
        return _plain(HttpResponseBadRequest, str(exc))
    except TooManyFieldsSent:
        return _plain(HttpResponseBadRequest, "The query string has too many parameters.")
    if fmt == "coco.json" and options.include_images:
        # One JSON file cannot hold images: the same annotations in a ZIP beside them (the batch
        # page's one "include the images" box goes with every button).
        fmt = "coco.zip"

    url = request.build_absolute_uri(batch.get_absolute_url())
    chunks = datasets.stream(batch, fmt, options, url=url)
    filename = datasets.download_name(batch, fmt)
    if stored_exports.in_bucket():
        # Uploaded to the bucket as it is built, then downloaded from there.
        return stored_exports.keep(
            "batches",
            batch.pk,
            filename=filename,
            content_type=datasets.FORMATS[fmt],
            content=stored_exports.chunks_file(chunks),
            log=f"batch={batch.pk} format={fmt}",
        )
    response = StreamingHttpResponse(chunks, content_type=datasets.FORMATS[fmt])
    response["Content-Disposition"] = content_disposition_header(True, filename)
    # What is exported changes with every review decision and finished run.
    response["Cache-Control"] = "private, no-cache"
    response["Content-Security-Policy"] = "default-src 'none'"
    return response
