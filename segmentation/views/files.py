"""Stored files for signed-in teammates: images, and our copies of what an engine made. Every
view finds its row (or 404s) before ``serve``, which streams the file or, from a bucket,
redirects to a short-lived signed link."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from segmentation.imaging.store import display_file
from segmentation.models import Mask, SourceImage
from segmentation.views._common import run_or_404, serve


@require_GET
def image_file(request: HttpRequest, image_id: int) -> HttpResponseBase:
    """A stored image. Only images we decoded ourselves are stored, and the content type is
    the one we determined, never the uploader's."""
    image = get_object_or_404(SourceImage, pk=image_id)
    return serve(image.file, image.content_type)


@require_GET
def image_display(request: HttpRequest, image_id: int) -> HttpResponseBase:
    """The image as pages show it: its display copy when it is larger than pages need (made on
    first view for images stored before copies existed), else the original. Masks and prompt
    coordinates stay in the original's pixels; the original stays at ``image_file``."""
    image = get_object_or_404(SourceImage, pk=image_id)
    return serve(*display_file(image))


@require_GET
def image_thumbnail(request: HttpRequest, image_id: int) -> HttpResponseBase:
    image = get_object_or_404(SourceImage, pk=image_id)
    if not image.thumbnail:
        return serve(image.file, image.content_type)
    return serve(image.thumbnail, "image/jpeg")


@require_GET
def run_file(request: HttpRequest, run_id: Any, kind: str) -> HttpResponseBase:
    """Our copies of what the engine made: the overlay, the thumbnail, the preview."""
    run = run_or_404(run_id)
    file = {"overlay": run.overlay, "thumb": run.thumbnail, "preview": run.preview}[kind]
    if not file:
        raise Http404("This run has no such file (yet).")
    content_type = {"overlay": "image/png", "thumb": "image/jpeg"}.get(kind)
    if content_type is None:
        suffix = (file.name or "").rsplit(".", 1)[-1]
        content_type = {"jpg": "image/jpeg", "webp": "image/webp"}.get(suffix, "image/png")
    return serve(file, content_type)


@require_GET
def mask_file(request: HttpRequest, run_id: Any, number: int) -> HttpResponseBase:
    mask = get_object_or_404(Mask, run_id=run_id, index=number - 1)
    if not mask.file:
        raise Http404("This mask could not be copied.")
    return serve(mask.file, "image/png")
