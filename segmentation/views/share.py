"""Public read-only links to a run, made and revoked by its owner.

Every teammate already has a permalink to every run (``/runs/<id>/``, signed in). A public link
is for people outside the team: ``/s/<token>/`` shows the run read-only (the image, the masks in
the viewer, the instances, the prompts and options) and serves the files that page needs under
the same prefix, each checking the token again, so a revoked link is a 404 everywhere at once.

* The token is ``Run.make_share_token()``: 32 random bytes, 43 URL-safe characters, unrelated to
  the run's id. Anything else in its place is a 404 without a database query.
* What a public page leaves out: who made the run, the run's own id, Runflow's ids, the request
  body, Runflow's answers, callback deliveries, metadata, links into the app and every control.
* A link answers only while its run's owner is an active account: disabling an account (someone
  left, or the account was taken over) turns off every link it made at once, without deleting
  them, so enabling the account again brings them back. Revoking stays the way to end one link.
* Public responses are never stored by shared caches (``private`` / ``no-store``), send no
  Referer (the token is in the URL) and ask search engines not to index them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.db import transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from segmentation import exports
from segmentation.imaging.store import display_file
from segmentation.models import Mask, Run
from segmentation.views import exports as export_views
from segmentation.views import viewer as viewer_views
from segmentation.views._common import run_context, run_or_404, serve
from segmentation.views.exports import Public
from segmentation.views.viewer import Links

# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
REFUSED = "Only the run's owner or an admin can make or revoke its public link."
# The page: never kept anywhere, so a revoked link is gone on the next load. Its files: kept a
# short while by the one browser that showed the page (which has them anyway), never by a proxy.
PAGE_CACHE_CONTROL = "no-store"
FILE_CACHE_CONTROL = "private, max-age=600"


# --- the owner's controls -----------------------------------------------------------------------


@require_POST
def run_share(request: HttpRequest, run_id: Any) -> HttpResponse:
    run = run_or_404(run_id)
    if not run.can_manage(request.user):
        return _refused()
    with transaction.atomic():
        # Two clicks (or the owner and an admin) at once make one link: the second finds it.
        locked = Run.objects.select_for_update().only("pk", "share_token").get(pk=run.pk)
        created = locked.share_token is None
        if created:
            run.share_token, run.shared_at = run.make_share_token(), timezone.now()
            run.save(update_fields=["share_token", "shared_at"])
        else:
            run.share_token = locked.share_token
    if not created:
        note = "This run already has a public link: it is the one below."
    elif not _owner_active(run):
        note = (
            "Public link created, but it will not answer while the run's owner's account is "
            "disabled."
        )
    else:
        note = "Public link created: anyone with it can see this run, without signing in."
    return _done(request, run, note)


@require_POST
def run_unshare(request: HttpRequest, run_id: Any) -> HttpResponse:
    run = run_or_404(run_id)
    if not run.can_manage(request.user):
        return _refused()
    revoked = Run.objects.filter(pk=run.pk, share_token__isnull=False).update(
        share_token=None, shared_at=None
    )
    run.share_token = run.shared_at = None
    if revoked:
        note = "Public link revoked: it now answers “not found”."
    else:
        note = "This run has no public link."
    return _done(request, run, note)


def _refused() -> HttpResponse:
    return HttpResponseForbidden(REFUSED + "\n", content_type="text/plain; charset=utf-8")


def _done(request: HttpRequest, run: Run, note: str) -> HttpResponse:
    """htmx swaps the share panel in place (the note inside it); a plain form post goes back
    to the run's page with the note as a message."""
    if getattr(request, "htmx", False):
        # Only reached by whoever may manage the run (checked before acting).
        context = {"run": run, "share_note": note, "can_manage": True}
        return render(request, "segmentation/_share.html", context)
    messages.success(request, note)
    return redirect(run.get_absolute_url() + "#share")


def _owner_active(run: Run) -> bool:
    return run.owner is not None and run.owner.is_active


# --- what a public link serves ------------------------------------------------------------------


def public(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A GET view anyone may open, given the link's run: the token is checked first, on every
    request, and the response gets the headers every public response needs."""

    @login_not_required
    @require_GET
    @wraps(view)
    def wrapper(request: HttpRequest, token: str, **kwargs: Any) -> HttpResponseBase:
        response = view(request, sharedrun_or_404(token), **kwargs)
        response.setdefault("Cache-Control", FILE_CACHE_CONTROL)
        response["Referrer-Policy"] = "no-referrer"
        response["X-Robots-Tag"] = "noindex, nofollow"
        return response

    return wrapper


def sharedrun_or_404(token: str) -> Run:
    if not TOKEN.fullmatch(token):
        raise Http404("No such link.")
    run = (
        Run.objects.select_related("image").filter(share_token=token, owner__is_active=True).first()
    )
    if run is None:
        raise Http404("No such link, or it was revoked.")
    return run


def _links(run: Run) -> Links:
    token = run.share_token
    return Links(
        image=reverse("shared_image_display", args=[token]),
        full_image=reverse("shared_image", args=[token]),
        crop=lambda number: reverse("shared_mask_crop", args=[token, number]),
        mask=lambda number: reverse("shared_mask", args=[token, number]),
        run_id=None,
    )


@public
def shared_run(request: HttpRequest, run: Run) -> HttpResponse:
    team = run_context(run)
    # Only what the page shows: nothing else of the team's context reaches the template.
    context = {
        key: team[key]
        for key in (
            "image",
            "options",
            "masks",
            "masks_missing",
            "instances",
            "box_shapes",
            "marker_r",
            "stroke",
            "font_size",
        )
    }
    token = run.share_token
    context.update(
        run=run,
        token=token,
        viewer_url=reverse("shared_viewer_data", args=[token]),
        # The viewer's markup names its controls after the run; here after the link instead.
        viewer_run={"id": "shared", "points": run.points, "boxes": run.boxes},
        exports=exports.links(lambda fmt: reverse("shared_export", args=[token, fmt])),
    )
    response = render(request, "segmentation/shared_run.html", context)
    response["Cache-Control"] = PAGE_CACHE_CONTROL
    return response


@public
def shared_image(request: HttpRequest, run: Run) -> HttpResponseBase:
    return _private(serve(run.image.file, run.image.content_type))


@public
def shared_image_display(request: HttpRequest, run: Run) -> HttpResponseBase:
    return _private(serve(*display_file(run.image)))


@public
def shared_overlay(request: HttpRequest, run: Run) -> HttpResponseBase:
    if not run.overlay:
        raise Http404("This run has no overlay (yet).")
    return _private(serve(run.overlay, "image/png"))


@public
def shared_mask(request: HttpRequest, run: Run, number: int) -> HttpResponseBase:
    mask = get_object_or_404(Mask, run=run, index=number - 1)
    if not mask.file:
        raise Http404("This mask could not be copied.")
    return _private(serve(mask.file, "image/png"))


@public
def shared_viewer_data(request: HttpRequest, run: Run) -> HttpResponseBase:
    return viewer_views.viewer_response(request, run, _links(run))


@public
def shared_mask_crop(request: HttpRequest, run: Run, number: int) -> HttpResponseBase:
    mask = get_object_or_404(Mask.objects.select_related("run__image"), run=run, index=number - 1)
    return viewer_views.crop_response(mask, FILE_CACHE_CONTROL)


@public
def shared_export(request: HttpRequest, run: Run, fmt: str) -> HttpResponseBase:
    links = _links(run)
    absolute = request.build_absolute_uri
    return export_views.export_response(
        request,
        run,
        fmt,
        public=Public(
            page_url=absolute(reverse("shared_run", args=[run.share_token])),
            mask_url=lambda number: absolute(links.mask(number)),
        ),
    )


def _private(response: HttpResponseBase) -> HttpResponseBase:
    # The team's files may be cached for a day; a public link's must be able to stop sooner.
    # A redirect to a signed link keeps its own, shorter, life (see _common.serve).
    if isinstance(response, FileResponse):
        response["Cache-Control"] = FILE_CACHE_CONTROL
    return response
