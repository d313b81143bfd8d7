"""Downloads of a run's results: ``/runs/<id>/export/<fmt>``, see ``segmentation.exports``.

Formats: ``masks.zip``, ``json``, ``coco`` and ``composite.png``. Each takes the viewer's
"what I see" parameters (``visible``, ``threshold``, ``colours``, ``opacity``); a parameter that
makes no sense is a 400 with the reason as plain text, never a 500.
"""

from __future__ import annotations

import tempfile
from typing import Any

from django.core.exceptions import TooManyFieldsSent
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotFound,
)
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from . import exports
from .views import _run_or_404

# fmt -> (extension of the download, content type)
FORMATS = {
    "masks.zip": ("zip", "application/zip"),
    "json": ("json", "application/json"),
    "coco": ("coco.json", "application/json"),
    "composite.png": ("png", "image/png"),
}
# A ZIP stays in memory up to this size, then spills to a temporary file.
ZIP_IN_MEMORY = 8 * 1024 * 1024


def _plain(response_class: type[HttpResponse], reason: str) -> HttpResponse:
    return response_class(reason + "\n", content_type="text/plain; charset=utf-8")


@require_GET
def export(request: HttpRequest, run_id: Any, fmt: str) -> HttpResponse:
    if fmt not in FORMATS:
        known = ", ".join(FORMATS)
        return _plain(HttpResponseNotFound, f"Unknown export format {fmt[:40]!r}: use {known}.")
    run = _run_or_404(run_id)
    masks = list(run.masks.all())
    if not exports.has_masks(masks):
        return _plain(HttpResponseNotFound, "This run has no masks to export.")
    try:
        # The length first: parsing a huge query (request.GET) is work, and past Django's
        # field limit (DATA_UPLOAD_MAX_NUMBER_FIELDS) it raises rather than parses.
        raw_length = len(request.META.get("QUERY_STRING", ""))
        query = request.GET if raw_length <= exports.MAX_QUERY_LENGTH else {}
        view = exports.parse_view(query, (m.number for m in masks), raw_length=raw_length)
    except exports.BadView as exc:
        return _plain(HttpResponseBadRequest, str(exc))
    except TooManyFieldsSent:
        return _plain(HttpResponseBadRequest, "The query string has too many parameters.")

    instances, hidden = exports.select(masks, view)
    extension, content_type = FORMATS[fmt]
    filename = exports.download_name(run, extension)
    absolute = request.build_absolute_uri

    if fmt == "masks.zip":
        # FileResponse closes it once sent.
        spool = tempfile.SpooledTemporaryFile(max_size=ZIP_IN_MEMORY)  # noqa: SIM115
        try:
            exports.write_zip(run, instances, hidden, view, spool, absolute=absolute)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        response: HttpResponse = FileResponse(
            spool, as_attachment=True, filename=filename, content_type=content_type
        )
    else:
        if fmt == "json":
            body = exports.dumps(exports.run_json(run, instances, hidden, view, absolute=absolute))
        elif fmt == "coco":
            body = exports.dumps(exports.coco_json(run, instances, view, absolute=absolute))
        else:
            body = exports.composite_png(run, instances, view)
        if content_type == "application/json":
            content_type += "; charset=utf-8"
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = content_disposition_header(True, filename)
    # What is exported depends on the query and on masks that a retry may still copy.
    response["Cache-Control"] = "private, no-cache"
    response["Content-Security-Policy"] = "default-src 'none'"
    return response
