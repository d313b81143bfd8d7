"""Downloads of a run's results: ``/runs/<id>/export/<fmt>``, see ``segmentation.exports``.

With a bucket, the file is written there and the answer is a redirect to a short-lived signed
link (``segmentation.stored_exports``).

Formats: ``masks.zip``, ``json``, ``coco`` and ``composite.png``. Each takes the viewer's
"what I see" parameters (``visible``, ``threshold``, ``colours``, ``opacity``); a parameter that
makes no sense is a 400 with the reason as plain text, never a 500.

A public link (``share_views``) offers the same formats through ``export_response`` with a
``Public``: its files name the link's URLs and leave out who made the run and Runflow's ids.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from django.core.exceptions import TooManyFieldsSent
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotFound,
)
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.views.decorators.http import require_GET

from segmentation import exports, stored_exports
from segmentation.imaging.store import storage_unavailable
from segmentation.models import Mask, Run
from segmentation.views._common import run_or_404

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
def export(request: HttpRequest, run_id: Any, fmt: str) -> HttpResponseBase:
    if fmt not in FORMATS:
        return unknown_format(fmt)
    return export_response(request, run_or_404(run_id), fmt)


def unknown_format(fmt: str) -> HttpResponse:
    known = ", ".join(FORMATS)
    return _plain(HttpResponseNotFound, f"Unknown export format {fmt[:40]!r}: use {known}.")


@dataclass(frozen=True)
class Public:
    """The exports of a public link (``share_views``): what they name must lead to the link's
    own URLs, never into the signed-in app, and must not name people, Runflow's ids or the
    team's metadata."""

    page_url: str  # the public page, absolute
    mask_url: Callable[[int], str]  # instance number -> its mask under the link, absolute


def export_response(
    request: HttpRequest, run: Run, fmt: str, *, public: Public | None = None
) -> HttpResponseBase:
    """``run`` exported as ``fmt``, with the viewer's "what I see" parameters from the query."""
    if fmt not in FORMATS:
        return unknown_format(fmt)
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

    try:
        return _build(request, run, fmt, masks, view, public)
    except Exception as exc:
        # The masks are read from the storage (and, with a bucket, the export written to it).
        if not storage_unavailable(exc):
            raise
        return stored_exports.storage_down(exc, log=f"run={run.pk} format={fmt}")


def _build(
    request: HttpRequest,
    run: Run,
    fmt: str,
    masks: list[Mask],
    view: exports.View,
    public: Public | None,
) -> HttpResponseBase:
    instances, hidden = exports.select(masks, view)
    extension, content_type = FORMATS[fmt]
    if public is None:
        filename = exports.download_name(run, extension)
    else:
        filename = _public_download_name(run, extension)
    absolute = request.build_absolute_uri

    if fmt == "masks.zip":
        # FileResponse closes it once sent.
        spool = tempfile.SpooledTemporaryFile(max_size=ZIP_IN_MEMORY)  # noqa: SIM115
        try:
            if public is None:
                exports.write_zip(run, instances, hidden, view, spool, absolute=absolute)
            else:
                _write_public_zip(run, instances, hidden, view, spool, public)
            spool.seek(0)
            if stored_exports.in_bucket():
                with spool:
                    return _kept(run, fmt, filename, content_type, spool)
        except BaseException:
            spool.close()
            raise
        response: HttpResponseBase = FileResponse(
            spool, as_attachment=True, filename=filename, content_type=content_type
        )
    else:
        if fmt == "json":
            data = exports.run_json(run, instances, hidden, view, absolute=absolute)
            body = exports.dumps(data if public is None else _public_json(data, run, public))
        elif fmt == "coco":
            data = exports.coco_json(run, instances, view, absolute=absolute)
            body = exports.dumps(data if public is None else _public_coco(data, run, public))
        else:
            body = exports.composite_png(run, instances, view)
        if content_type == "application/json":
            content_type += "; charset=utf-8"
        if stored_exports.in_bucket():
            return _kept(run, fmt, filename, content_type, io.BytesIO(body))
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = content_disposition_header(True, filename)
    # What is exported depends on the query and on masks that a retry may still copy.
    response["Cache-Control"] = "private, no-cache"
    response["Content-Security-Policy"] = "default-src 'none'"
    return response


def _kept(
    run: Run, fmt: str, filename: str, content_type: str, content: IO[bytes]
) -> HttpResponseBase:
    # With a bucket: written there, and the browser sent to it (segmentation.stored_exports).
    return stored_exports.keep(
        "runs",
        run.pk,
        filename=filename,
        content_type=content_type,
        content=content,
        log=f"run={run.pk} format={fmt}",
    )


# --- public links -------------------------------------------------------------------------------
# The team's exports are built as usual, then cut down to what a public link may tell: only the
# fields listed here pass, so a field added to the team's exports later stays inside the team.


def _public_json(data: dict[str, Any], run: Run, public: Public) -> dict[str, Any]:
    team_run = data["run"]
    rows = []
    for row in data["instances"]:
        row = dict(row)
        if "url" in row:  # a download link into the app: the link's own mask URL instead
            row["url"] = public.mask_url(row["number"])
        rows.append(row)
    return {
        "run": {
            "url": public.page_url,
            "created_at": team_run["created_at"],
            "status": team_run["status"],
            "image": {
                "name": public_image_name(run),
                "width": run.image.width,
                "height": run.image.height,
                "content_type": run.image.content_type,
            },
        },
        "prompts": data["prompts"],
        "options": data["options"],
        "view": data["view"],
        "instances": rows,
        "hidden": data["hidden"],
        "box_format": data["box_format"],
    }


def _public_coco(data: dict[str, Any], run: Run, public: Public) -> dict[str, Any]:
    info = data["info"]
    return {
        "info": {
            "description": "SAM 3 run" + (f": {run.prompt}" if run.prompt else ""),
            "url": public.page_url,
            "date_created": info["date_created"],
            "contributor": "",
            "view": info["view"],
            "not_exported": info["not_exported"],
        },
        "licenses": [],
        "images": [{**data["images"][0], "file_name": public_image_name(run)}],
        "categories": data["categories"],
        "annotations": data["annotations"],
    }


def _write_public_zip(
    run: Run,
    instances: list[exports.Instance],
    hidden: list[int],
    view: exports.View,
    out: IO[bytes],
    public: Public,
) -> None:
    """The team's ZIP, copied entry by entry (the PNGs as they are) with a public
    instances.json in place of the team's."""
    with tempfile.SpooledTemporaryFile(max_size=ZIP_IN_MEMORY) as team:
        exports.write_zip(run, instances, hidden, view, team)
        team.seek(0)
        with zipfile.ZipFile(team) as source, zipfile.ZipFile(out, "w") as archive:
            for entry in source.infolist():
                copy = zipfile.ZipInfo(entry.filename, entry.date_time)
                copy.compress_type = entry.compress_type
                if entry.filename == "instances.json":
                    data = _public_json(json.loads(source.read(entry)), run, public)
                    archive.writestr(copy, exports.dumps(data))
                else:
                    with source.open(entry) as src, archive.open(copy, "w") as dst:
                        shutil.copyfileobj(src, dst)


def public_image_name(run: Run) -> str:
    """The image's name under a public link: not the uploader's file name, which may say more
    than the image does."""
    extension = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}.get(
        run.image.content_type, "img"
    )
    return f"image.{extension}"


def _public_download_name(run: Run, extension: str) -> str:
    # As the team's names, without the run's id.
    slug = slugify(run.prompt)[:40].strip("-") or "points-and-boxes"
    return f"{slug}-shared.{extension}"
