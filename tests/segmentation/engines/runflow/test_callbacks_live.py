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
from tests.factories import callback_payload, stored_image

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
