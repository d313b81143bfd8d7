"""Runs as Runflow describes them: the run object, its output, and the callback payload.

A run is the same row the web app shows; only its words change. Our statuses become Runflow's
(a run the engine refused is "failed" with the engine's own code; a succeeded run stays
"running" while its masks are copied, so "succeeded" always comes with an output). Every URL
in an output is absolute and points at sam3web's own copy: a signed link
(``/v1/files/<signed>/<name>``) that works without any header until it expires
(SAM3WEB_API_FILE_URL_TTL, a week by default) or the run is deleted."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core import signing
from django.db.models.fields.files import FieldFile
from django.http import HttpRequest
from django.urls import reverse

from segmentation.models import Mask, Run

MODEL_ID = "meta/sam-3/image"
FILE_SALT = "sam3web.api-file"
S = Run.Status
# Every status_code a run reads as, in the order a run passes through them.
RUN_STATUSES = ["queued", "dispatching", "running", "succeeded", "failed", "canceled"]


def base_url(request: HttpRequest) -> str:
    """Where the caller reached us: the base of every URL we answer with."""
    return request.build_absolute_uri("/").rstrip("/")


def run_base(run: Run) -> str:
    """The base URL for a run's links when no request is at hand (a callback): where its
    caller reached us, else the configured public URL."""
    return run.base_url or settings.SAM3WEB_PUBLIC_URL or "http://localhost:8000"


def iso(moment: dt.datetime | None) -> str | None:
    # Runflow writes "+00:00", not "Z".
    return moment.astimezone(dt.UTC).isoformat() if moment else None


def status_code(run: Run) -> str:
    if run.status in (S.WAITING, S.PENDING, S.SUBMITTING):
        return "queued"
    if run.status == S.SUCCEEDED:
        return "running" if run.copying else "succeeded"
    if run.status in (S.NOT_SUBMITTED, S.STALE):
        return "failed"
    return str(run.status)  # queued, dispatching, running, failed, canceled


def failure(run: Run) -> tuple[str | None, str | None, str | None]:
    """(failure_code, failure_message, failure_stage_code) as the caller reads them."""
    if run.status == S.NOT_SUBMITTED:
        return run.error_code or "NOT_SUBMITTED", run.error_message, "submit"
    if run.status == S.STALE:
        return "NO_RESULT", run.error_message, "result"
    if run.status in (S.FAILED, S.CANCELED):
        return (
            run.failure_code or None,
            run.failure_message or None,
            run.failure_stage or None,
        )
    return None, None, None


def cost(run: Run) -> str | None:
    """Runflow's decimal string: its own figure once known; the list price for a finished run
    whose figure has not come yet; nothing while under way."""
    if run.cost is not None:
        return f"{run.cost.normalize():f}"
    if status_code(run) in ("failed", "canceled"):
        return "0"
    if status_code(run) == "succeeded":
        return f"{Decimal(settings.SAM3WEB_PRICE_PER_IMAGE).normalize():f}"
    return None


def sign_file(run: Run, kind: str, index: int | None = None) -> str:
    return signing.dumps([str(run.pk), kind, index], salt=FILE_SALT)


def unsign_file(token: str) -> tuple[str, str, int | None] | None:
    try:
        value = signing.loads(token, salt=FILE_SALT, max_age=settings.SAM3WEB_API_FILE_URL_TTL)
    except signing.BadSignature:
        return None
    if not (isinstance(value, list) and len(value) == 3):
        return None
    return str(value[0]), str(value[1]), value[2] if isinstance(value[2], int) else None


def file_url(base: str, run: Run, kind: str, name: str, index: int | None = None) -> str:
    return base + reverse("api_file", args=[sign_file(run, kind, index), name])


def content_type_of(file: FieldFile) -> str:
    suffix = (file.name or "").rsplit(".", 1)[-1].lower()
    return {"jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}.get(
        suffix, "image/png"
    )


def _file(
    base: str, run: Run, file: FieldFile, kind: str, name: str, index: int | None, inline: bool
) -> dict[str, Any]:
    content_type = content_type_of(file)
    if inline:  # sync_mode: the caller asked for the files inside the answer
        with file.open("rb") as f:
            url = f"data:{content_type};base64,{base64.b64encode(f.read()).decode('ascii')}"
    else:
        url = file_url(base, run, kind, name, index)
    return {
        "url": url,
        "content_type": content_type,
        "file_name": name,
        "file_size": file.size,
        "width": run.image.width,
        "height": run.image.height,
    }


def normalized_box(mask: Mask, width: int, height: int) -> list[float] | None:
    """Our pixel box as SAM 3 gives boxes: [cx, cy, w, h], normalized 0–1."""
    box = mask.box
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return [
        round((x0 + x1) / 2 / width, 6),
        round((y0 + y1) / 2 / height, 6),
        round((x1 - x0) / width, 6),
        round((y1 - y0) / height, 6),
    ]


def output(run: Run, base: str) -> dict[str, Any] | None:
    """The run's output with our copies in place of Runflow's files (None until there is one)."""
    if status_code(run) != "succeeded":
        return None
    inline = bool(run.input.get("sync_mode"))
    width, height = run.image.width, run.image.height
    masks = sorted((m for m in run.masks.all() if m.file), key=lambda m: m.index)
    files = [
        _file(base, run, m.file, "mask", f"mask-{m.number}.png", m.index, inline) for m in masks
    ]
    preview = (
        _file(
            base,
            run,
            run.preview,
            "preview",
            f"preview.{(run.preview.name or '').rsplit('.', 1)[-1]}",
            None,
            inline,
        )
        if run.preview
        else None
    )
    boxes = [normalized_box(m, width, height) for m in masks]
    model_data: dict[str, Any] = {
        "masks": files,
        "image": preview,
        "prompt": run.prompt,
        "metadata": [
            {"index": n, "score": m.score, "box": box}
            for n, (m, box) in enumerate(zip(masks, boxes, strict=True))
        ],
    }
    if run.input.get("include_scores"):
        model_data["scores"] = [m.score for m in masks]
    if run.input.get("include_boxes"):
        model_data["boxes"] = boxes
    provider = run.output if isinstance(run.output, dict) else {}
    return {
        "outputs": [{"type": "image", **f} for f in [*files, *([preview] if preview else [])]],
        "model_data": model_data,
        "nsfw_detected": provider.get("nsfw_detected"),
        "seed": provider.get("seed"),
        "timing": provider.get("timing"),
    }


def input_echo(run: Run, base: str) -> dict[str, Any]:
    """The input as the caller sent it: its image URL, or, for an inline image, a link to our
    copy of it (not megabytes of base64 again)."""
    image_url = run.source_url or file_url(
        base, run, "image", f"image.{(run.image.file.name or '').rsplit('.', 1)[-1]}"
    )
    return {"image_url": image_url, **run.input}


def run_object(run: Run, base: str) -> dict[str, Any]:
    code, message, stage = failure(run)
    final = status_code(run) in ("succeeded", "failed", "canceled")
    return {
        "id": str(run.pk),
        "model_id": MODEL_ID,
        "status_code": status_code(run),
        "input": input_echo(run, base),
        "output": output(run, base),
        "metadata": run.metadata,
        "client_ref": run.client_ref or None,
        "callback_url": run.callback_url or None,
        "cost": cost(run),
        "duration_ms": run.duration_ms,
        "created_at": iso(run.created_at),
        "started_at": iso(run.submitted_at),
        "completed_at": iso(run.completed_at or run.updated_at) if final else None,
        "failure_code": code,
        "failure_message": message,
        "failure_stage_code": stage,
        "links": {
            "self": base + reverse("api_run", args=[run.pk]),
            "web": base + run.get_absolute_url(),
        },
    }


EVENTS = {"succeeded": "run.completed", "failed": "run.failed", "canceled": "run.cancelled"}


def callback_payload(run: Run, base: str) -> dict[str, Any]:
    """Runflow's callback body for a run that ended (its status is final)."""
    obj = run_object(run, base)
    status = obj["status_code"]
    return {
        "event": EVENTS[status],
        # Runflow's callbacks spell it the British way.
        "run_id": obj["id"],
        "status": "cancelled" if status == "canceled" else status,
        "output": obj["output"],
        "duration_ms": obj["duration_ms"],
        "created_at": obj["created_at"],
        "completed_at": obj["completed_at"],
        "metadata": obj["metadata"],
    }
