"""The run page's long poll (segmentation.live, through /runs/<id>/status/?v=…&wait=1): the
request waits for the run to change and answers the moment it does; nothing new → 204 when the
wait is over; a settled run or a stopping server never makes anyone wait."""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.db import connection
from django.test import Client

from segmentation import live
from segmentation.models import CallbackDelivery, Run
from segmentation.views._common import run_context
from tests.factories import add_masks, ellipse, make_run

pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HX-Request": "true"}


def shown_version(client: Client, run: Run) -> str:
    page = client.get(f"/runs/{run.id}/").content.decode()
    found = re.search(r"/status/\?v=([0-9a-f]+)", page)
    assert found, "the run page does not ask for its live part"
    return found.group(1)


def later(seconds: float, change) -> threading.Thread:
    def act() -> None:
        time.sleep(seconds)
        try:
            change()
        finally:
            connection.close()

    thread = threading.Thread(target=act)
    thread.start()
    return thread


def test_a_change_is_sent_as_soon_as_it_is_stored(signed_in: Client, owner, settings) -> None:
    settings.SAM3WEB_LIVE_WAIT = 20
    run = make_run(owner, status=Run.Status.QUEUED)
    seen = shown_version(signed_in, run)
    changer = later(0.3, lambda: Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING))
    began = time.monotonic()
    response = signed_in.get(f"/runs/{run.id}/status/?v={seen}&wait=1", headers=HTMX)
    waited = time.monotonic() - began
    changer.join()
    assert response.status_code == 200
    assert "SAM 3 is working on it." in response.content.decode()
    assert 0.25 < waited < 10  # it waited for the change, not for the end of the wait
    assert f"v={seen}" not in response.content.decode()  # the next ask carries the new version


def test_nothing_new_is_a_204_when_the_wait_is_over(signed_in: Client, owner, settings) -> None:
    settings.SAM3WEB_LIVE_WAIT = 0.3
    run = make_run(owner, status=Run.Status.QUEUED)
    seen = shown_version(signed_in, run)
    began = time.monotonic()
    response = signed_in.get(f"/runs/{run.id}/status/?v={seen}&wait=1", headers=HTMX)
    assert response.status_code == 204
    assert time.monotonic() - began >= 0.3


def test_a_stale_version_is_answered_at_once(signed_in: Client, owner, settings) -> None:
    settings.SAM3WEB_LIVE_WAIT = 20
    run = make_run(owner, status=Run.Status.QUEUED)
    began = time.monotonic()
    response = signed_in.get(f"/runs/{run.id}/status/?v=000000000000&wait=1", headers=HTMX)
    assert response.status_code == 200 and time.monotonic() - began < 5


def test_a_settled_run_ends_the_asking(signed_in: Client, owner, settings) -> None:
    settings.SAM3WEB_LIVE_WAIT = 20
    run = make_run(owner, status=Run.Status.FAILED)
    response = signed_in.get(f"/runs/{run.id}/status/?v=x&wait=1", headers=HTMX)
    assert response.status_code == 286  # htmx: stop polling


def test_a_stopping_server_ends_the_waits(owner, settings) -> None:
    settings.SAM3WEB_LIVE_WAIT = 20
    run = make_run(owner, status=Run.Status.QUEUED)
    seen = live.current_version(run.pk)
    assert seen is not None
    stopper = later(0.2, live.stopping.set)
    try:
        began = time.monotonic()
        assert live.wait_for_change(run.pk, seen) is False
        assert time.monotonic() - began < 5
    finally:
        stopper.join()
        live.stopping.clear()


def test_a_deleted_run_ends_the_wait(owner, settings) -> None:
    run = make_run(owner, status=Run.Status.QUEUED)
    seen = live.current_version(run.pk)
    assert seen is not None
    Run.objects.filter(pk=run.pk).delete()
    assert live.wait_for_change(run.pk, seen, timeout=20) is True


def test_the_waits_version_is_the_pages_whatever_the_run_holds(owner) -> None:
    """The long poll's one-query version and the page's must agree, or a wait would end at
    once (a page asking without pause) or never."""
    run = make_run(owner, status=Run.Status.QUEUED)
    assert live.current_version(run.pk) == run_context(run)["version"]  # nothing yet
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.SUCCEEDED, artifacts=Run.Artifacts.COPYING
    )
    add_masks(Run.objects.get(pk=run.pk), [(ellipse((10, 10, 90, 90)), None)])
    run = Run.objects.get(pk=run.pk)
    assert live.current_version(run.pk) == run_context(run)["version"]  # copying: none shown
    Run.objects.filter(pk=run.pk).update(artifacts=Run.Artifacts.DONE)
    for _ in range(2):
        CallbackDelivery.objects.create(
            run=run, signature="valid", outcome="applied", http_status=200, body_bytes=2
        )
    run = Run.objects.get(pk=run.pk)
    assert live.current_version(run.pk) == run_context(run)["version"]
    assert run_context(run)["masks"]
