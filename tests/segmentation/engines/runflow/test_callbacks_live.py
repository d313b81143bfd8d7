"""Callbacks over real sockets, many at once, on SQLite: none lost, no "database is locked",
and a callback racing a poll for the same run applies the result exactly once."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection
from django_tasks_db.models import DBTaskResult

from segmentation.engines.base import apply_result
from segmentation.engines.runflow.callbacks import callback_token
from segmentation.engines.runflow.parse import parse_run_object
from segmentation.models import CallbackDelivery, Run
from tests.factories import callback_payload, run_worker, stored_image, submit

pytestmark = pytest.mark.django_db(transaction=True)


def make_runs(owner, n: int) -> list[Run]:
    image = stored_image("cat.jpg")
    return [
        Run.objects.create(
            owner=owner,
            image=image,
            input={"prompt": "cat"},
            status=Run.Status.RUNNING,
            provider_run_id=f"prov-{n}",
        )
        for n in range(n)
    ]


def test_50_callbacks_at_once_are_all_applied(live_server, owner) -> None:
    runs = make_runs(owner, 50)
    barrier = threading.Barrier(50)

    def deliver(run: Run) -> int:
        body = json.dumps(callback_payload(run_id=run.provider_run_id)).encode()
        with httpx.Client(timeout=60) as client:
            barrier.wait()  # all 50 leave together
            response = client.post(
                f"{live_server.url}/callbacks/runflow/{run.id}/{callback_token(run.id)}/",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        return response.status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(deliver, runs))

    assert codes == [200] * 50
    assert Run.objects.filter(status=Run.Status.SUCCEEDED).count() == 50
    assert CallbackDelivery.objects.filter(outcome="applied").count() == 50
    assert DBTaskResult.objects.filter(task_path__endswith="copy_artifacts").count() == 50


@pytest.mark.parametrize("attempt", range(5))
def test_a_callback_and_a_poll_racing_apply_once(live_server, owner, attempt: int) -> None:
    [run] = make_runs(owner, 1)
    body = json.dumps(callback_payload(run_id=run.provider_run_id)).encode()
    polled = parse_run_object(
        {
            "id": run.provider_run_id,
            "status_code": "succeeded",
            "output": callback_payload()["output"],
            "duration_ms": 1800,
            "cost": "0.005",
        }
    )
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def callback() -> None:
        barrier.wait()
        response = httpx.post(
            f"{live_server.url}/callbacks/runflow/{run.id}/{callback_token(run.id)}/",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        outcomes["callback"] = response.json()["outcome"]

    def poll() -> None:
        barrier.wait()
        try:
            outcomes["poll"] = apply_result(run.pk, polled, source="poll")
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=callback), threading.Thread(target=poll)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert sorted(outcomes.values()) == ["applied", "duplicate"]
    assert DBTaskResult.objects.filter(task_path__endswith="copy_artifacts").count() == 1
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    assert run.result_source == ("callback" if outcomes["callback"] == "applied" else "poll")


def test_a_callback_that_beats_the_answer_to_the_create_loses_nothing(
    signed_in, standin, live_server, settings
) -> None:
    """A fast engine: the run ends, and its callback arrives, before Runflow's answer to our
    create. The result stands, and what only the submit knows is still recorded."""
    settings.SAM3WEB_PUBLIC_URL = live_server.url
    standin.complete_after = 0
    standin.create_delay = 1.0  # the run exists and finishes at once; the 201 comes late
    standin.callback_backoff = (0.05, 0.05)
    run = submit(signed_in)
    run_worker()
    run.refresh_from_db()
    [provider_run] = standin.runs_for_client_ref(str(run.id))
    assert run.result_source == "callback" and run.status == Run.Status.SUCCEEDED
    assert run.provider_run_id == provider_run["id"]
    assert run.submitted_at is not None and run.completed_at is not None
    assert run.submitted_at >= run.completed_at
    assert run.request_body is not None and run.request_body["input"]["prompt"] == "cat"
    assert run.provider_response is not None
    assert run.provider_response["id"] == provider_run["id"]
    assert run.lease_until is None
