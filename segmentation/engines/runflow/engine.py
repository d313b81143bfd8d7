"""Runflow's hosted SAM 3 as an engine: sending a run, looking up its result, and where the
result's masks are.

Creating a run must never create two provider runs for one local run. Every attempt sends the
same body with Idempotency-Key = the run's id; an attempt after one that may have reached
Runflow first looks for a provider run carrying our client_ref and adopts it (whether Runflow
honours the key for single runs is a guess, see docs/runflow-api.md)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import httpx
from django.conf import settings

from segmentation.engines import base
from segmentation.engines.runflow import client as runflow
from segmentation.engines.runflow.callbacks import callback_url
from segmentation.engines.runflow.output import parse_output
from segmentation.engines.runflow.parse import STATUSES, BadResult, parse_run_object
from segmentation.imaging import masks
from segmentation.imaging.intake import data_uri
from segmentation.imaging.safe_fetch import Origin, origin
from segmentation.models import Run

logger = logging.getLogger(__name__)


class RunflowEngine(base.Engine):
    name: ClassVar[str] = "runflow"
    label: ClassVar[str] = "Runflow"

    def unavailable(self) -> str:
        if not settings.RUNFLOW_API_KEY:
            return "Runs cannot be submitted: no Runflow API key is configured."
        return ""

    def submit(self, run: Run) -> str:
        with runflow.get_client() as client:
            try:
                provider_run = None
                if run.submit_attempts > 1:
                    # An earlier attempt may have created the run before its worker died.
                    provider_run = client.find_run_by_client_ref(str(run.pk))
                if provider_run is None:
                    provider_run = _create(run, client)
            except runflow.RunflowError as exc:
                logger.warning("run=%s event=not_submitted error=%s", run.pk, exc.summary())
                base.not_submitted(
                    run,
                    http_status=exc.status_code,
                    code=exc.code,
                    message=exc.summary(),
                    details={
                        "errors": exc.errors,
                        "fields": exc.field_messages(),
                        "retry_after": exc.retry_after,
                    },
                )
                return "not submitted"
        status_code = str(provider_run.get("status_code", ""))
        base.submitted(
            run,
            provider_run_id=str(provider_run["id"]),
            provider_status=status_code,
            status=STATUSES.get(status_code.lower(), Run.Status.QUEUED),
            response=without_inline_image(run, provider_run),
            engine=self,
        )
        return "submitted"

    def first_poll_delay(self, run: Run) -> float:
        # Without a callback URL polling is how the result comes; with one, a late safety net.
        first = settings.SAM3WEB_CALLBACK_GRACE if callback_url(run.pk) else 0
        return max(first, settings.SAM3WEB_POLL_FIRST)

    def refresh(self, run: Run) -> str:
        try:
            with runflow.get_client() as client:
                result = parse_run_object(client.get_run(run.provider_run_id))
        except runflow.RunflowError as exc:
            if exc.status_code == 404:
                # RUN_NOT_FOUND is final (docs/runflow-api.md): asking again will not help.
                logger.warning("run=%s event=unknown_at_engine error=%s", run.pk, exc.summary())
                code = (
                    exc.code if exc.code and not exc.code.startswith("HTTP_") else "RUN_NOT_FOUND"
                )
                return base.unknown_at_engine(run, engine=self, code=code, http_status=404)
            logger.warning("run=%s event=lookup_failed error=%s", run.pk, exc)
            return "error"
        except BadResult as exc:
            logger.warning("run=%s event=bad_result error=%s", run.pk, exc)
            return "error"
        return base.apply_result(run.pk, result, source="poll")

    def after_store(self, run: Run) -> None:
        """Callbacks carry no cost; the run object does. One GET, and no harm if it fails (the
        page shows the list price as an estimate meanwhile)."""
        if run.cost is not None:
            return
        try:
            with runflow.get_client() as client:
                result = parse_run_object(client.get_run(run.provider_run_id))
        except (runflow.RunflowError, BadResult) as exc:
            logger.info("run=%s event=cost_not_fetched error=%s", run.pk, exc)
            return
        if result.cost is not None:
            Run.objects.filter(pk=run.pk).update(cost=result.cost)

    def output(self, run: Run) -> base.EngineOutput:
        return parse_output(run.output)

    def download(self, url: str, *, what: str) -> bytes:
        return masks.download(url, what=what, provider=self.label, trusted=_trusted_origin())


def _trusted_origin() -> Origin | None:
    """Runflow's own origin, from RUNFLOW_BASE_URL: its storage links (and the stand-in on
    127.0.0.1 in tests and by hand) are fetched without the private-address check."""
    try:
        url = httpx.URL(settings.RUNFLOW_BASE_URL)
    except (httpx.InvalidURL, ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return origin(url)


def _create(run: Run, client: runflow.RunflowClient) -> dict[str, Any]:
    body = runflow.build_create_body(
        input={"image_url": resolve_image_url(run, client), **run.input},
        client_ref=str(run.pk),
        callback_url=callback_url(run.pk),
        metadata=run.metadata,
    )
    # Saved with the outcome (success or refusal), in the same write.
    run.request_body = without_inline_image(run, body)
    try:
        return client.create_run(idempotency_key=str(run.pk), **body)
    except runflow.RunflowError as exc:
        # 409: this Idempotency-Key already made a run (sent with another body by an earlier
        # attempt). That run is ours: adopt it rather than report an error.
        if exc.status_code == 409:
            existing = client.find_run_by_client_ref(str(run.pk))
            if existing is not None:
                return existing
        raise


def resolve_image_url(run: Run, client: runflow.RunflowClient) -> str:
    """What Runflow gets as image_url: the person's own https URL when our copy is the same
    image; otherwise our copy, inline when small, through the asset upload when large."""
    image = run.image
    if run.source_url.startswith("https://") and not image.converted:
        run.image_delivery = "url"
        return run.source_url
    if image.byte_size <= settings.RUNFLOW_INLINE_MAX_BYTES:
        run.image_delivery = "inline"
        with image.file.open("rb") as f:
            return data_uri(f.read(), image.content_type)
    run.image_delivery = "asset"
    if not run.asset_url:
        # Uploaded once per run, so a retried create sends an identical body.
        with image.file.open("rb") as f:
            data = f.read()
        extension = (image.file.name or "").rsplit(".", 1)[-1]
        run.asset_url = client.upload_asset(
            data=data, filename=f"{image.sha256[:16]}.{extension}", mime_type=image.content_type
        )
        Run.objects.filter(pk=run.pk).update(asset_url=run.asset_url, image_delivery="asset")
    return run.asset_url


def without_inline_image(run: Run, payload: dict[str, Any]) -> dict[str, Any]:
    """A create body (or Runflow's answer, which echoes the input) with an inline image named
    rather than copied: it is the stored image file, base64-encoded, byte for byte. Keeping
    the data: URI would store up to 1.4 MB of base64 per run, twice."""
    echoed = payload.get("input")
    if not isinstance(echoed, dict) or not str(echoed.get("image_url", "")).startswith("data:"):
        return payload
    image = run.image
    named = f"data:{image.content_type};base64,… ({image.byte_size} bytes, sha256 {image.sha256})"
    return {**payload, "input": {**echoed, "image_url": named}}
