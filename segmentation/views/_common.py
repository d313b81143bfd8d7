"""What several views share: finding a run or 404, serving a stored file, what the run
page (and the public page) show of a run, and what the pages that start runs say of the
budget."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django_htmx.middleware import HtmxDetails

from accounts import budgets
from segmentation import engines, exports, live, tasks
from segmentation.imaging.render import colour_for
from segmentation.imaging.store import signed_url
from segmentation.models import CallerCallback, Mask, Run


class HtmxHttpRequest(HttpRequest):
    """A request as django-htmx's middleware leaves it (typed, as its docs suggest)."""

    htmx: HtmxDetails


def run_or_404(run_id: Any) -> Run:
    return get_object_or_404(Run.objects.select_related("image", "owner", "token"), pk=run_id)


def serve(file: FieldFile, content_type: str) -> HttpResponseBase:
    """A stored file, as the type we determined (never the uploader's), cached privately, and
    never run as a page. Callers have checked access already: from a bucket, this is a
    redirect to a link signed for a few minutes (the bucket sends the bytes, with our content
    type); from the filesystem, the file itself."""
    url = signed_url(file, content_type)
    if url:
        redirect = HttpResponseRedirect(url)
        # Cached for at most half the link's life, so a cached redirect never leads to a link
        # that has expired; the file it leads to is cached by its own (new) URL.
        redirect["Cache-Control"] = f"private, max-age={settings.SAM3WEB_S3_URL_TTL // 2}"
        return redirect
    try:
        f = file.open("rb")
    except FileNotFoundError:
        raise Http404("The image file is missing.") from None
    response = FileResponse(f, content_type=content_type)
    response["Cache-Control"] = "private, max-age=86400, immutable"
    response["Content-Security-Policy"] = "default-src 'none'"
    return response


def run_context(run: Run, request: HttpRequest | None = None) -> dict[str, Any]:
    """Everything the run page draws: the image with its prompts, the instances, the exports,
    the deliveries, and a version that changes whenever the live part would change."""
    image = run.image
    image_area = image.width * image.height
    drawing = prompt_drawing(run)
    # While the masks are being copied the page says so and shows none: it shows them once,
    # all together, instead of starting its viewer again for each mask as it lands.
    masks = [] if run.copying else list(run.masks.all())
    deliveries = list(run.deliveries.all()[: live.DELIVERIES_SHOWN])
    # Only API runs have callbacks to their caller: no query for the others.
    caller_callbacks = (
        [_caller_callback(c) for c in run.caller_callbacks.all()] if run.via_api else []
    )
    version = live.version(run, deliveries=len(deliveries), masks=len(masks))
    return {
        "run": run,
        "engine": engines.for_run(run),
        "can_manage": bool(request and run.can_manage(request.user)),
        "exports": exports.links(lambda fmt: reverse("run_export", args=[run.pk, fmt])),
        "image": image,
        "options": options_of(run),
        "masks": masks,
        "masks_missing": sum(1 for m in masks if not m.file),
        "storage_waiting": storage_waiting(run),
        "instances": [_instance(m, drawing["font_size"], image_area) for m in masks],
        "deliveries": deliveries,
        "caller_callbacks": caller_callbacks,
        "version": version,
        **drawing,
        "image_area": image_area,
        "request_body_json": pretty(run.request_body),
        "provider_response_json": pretty(run.provider_response),
        "output_json": pretty(run.output),
        "metadata_json": pretty(run.metadata),
    }


def storage_waiting(run: Run) -> bool:
    """The run's masks wait for the file storage to be reachable again (tasks.copy_artifacts)."""
    return run.copying and any(
        str(note).startswith(tasks.STORAGE_WAIT_NOTE) for note in run.artifact_notes
    )


def _caller_callback(callback: CallerCallback) -> dict[str, Any]:
    """A callback sent to the API caller, with its attempts as the page lists them (each
    attempt's time is stored as ISO text, in a JSON list)."""
    attempts = [
        {**attempt, "at": parse_datetime(attempt.get("at") or "")}
        for attempt in callback.attempts
        if isinstance(attempt, dict)
    ]
    return {
        "callback": callback,
        "attempts": attempts,
        "redelivery": callback.key.startswith("redelivery-"),
    }


def options_of(run: Run) -> list[tuple[str, Any]]:
    """The run's options in the schema's order, as the pages list them."""
    return [(name, run.input.get(name)) for name in Run.OPTION_NAMES]


def prompt_drawing(run: Run) -> dict[str, Any]:
    """Sizes for drawing a run's points and boxes over its image (see _stage_svg.html)."""
    scale = max(run.image.width, run.image.height)
    return {
        "font_size": max(10, round(scale / 40)),
        "box_shapes": [
            {**b, "w": b["x_max"] - b["x_min"], "h": b["y_max"] - b["y_min"]} for b in run.boxes
        ],
        "marker_r": max(3, round(scale / 90)),
        "stroke": max(1, round(scale / 300)),
    }


def _instance(mask: Mask, font_size: int, image_area: int) -> dict[str, Any]:
    x0, y0, x1, y1 = mask.box or (0, 0, 0, 0)
    r, g, b = colour_for(mask.index)
    label = f"#{mask.number}" + (f" {mask.score:.2f}" if mask.score is not None else "")
    tag_h = round(font_size * 1.35)
    return {
        "mask": mask,
        "x": x0,
        "y": y0,
        "w": x1 - x0,
        "h": y1 - y0,
        "colour": f"rgb({r}, {g}, {b})",
        # The share of the image the mask covers, as the viewer's list writes it (one decimal).
        "area_pct": f"{100 * mask.area / image_area:.1f}" if mask.area is not None else None,
        # A filled tag above the box (inside it when the box touches the top edge).
        "label": label,
        "tag_h": tag_h,
        "tag_w": round(len(label) * font_size * 0.62 + font_size * 0.5),
        "tag_y": y0 - tag_h if y0 >= tag_h else y0,
        "tag_pad": round(font_size * 0.25),
        "tag_baseline": round(font_size * 1.05),
    }


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) if value else ""


def budget_context(user: Any) -> dict[str, str]:
    """What the pages that start runs say about the budget: what is left ("" when nothing
    limits it), and why no run can start now ("" while one can)."""
    return {
        "budget_text": budgets.standing(user).text,
        "budget_refusal": budgets.refusal(user),
    }
