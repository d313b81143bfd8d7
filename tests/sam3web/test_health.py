"""/healthz, as a load balancer sees it: 200 when the database, storage, a worker and the queue
are all well, 503 naming what is not; never a 500, never cached, nothing secret in it."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from segmentation import tasks
from segmentation.models import WorkerHeartbeat
from tests.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


def beat(seconds_ago: float = 0.0) -> WorkerHeartbeat:
    seen = timezone.now() - dt.timedelta(seconds=seconds_ago)
    return WorkerHeartbeat.objects.create(
        worker_id=f"w-{seconds_ago}",
        hostname=socket.gethostname(),
        pid=os.getpid(),
        started_at=seen,
        seen_at=seen,
    )


def health(client: Client) -> tuple[int, dict[str, Any], Any]:
    response = client.get("/healthz")
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    return response.status_code, json.loads(response.content), response


def test_healthy_with_a_live_worker_and_an_empty_queue(stranger: Client) -> None:
    beat(1)
    status, body, _ = health(stranger)  # nobody signed in: a load balancer is nobody
    assert status == 200, body
    assert body["ok"] is True and body["reasons"] == []
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["storage"] == {"ok": True}
    assert body["checks"]["workers"] == {"ok": True, "live": 1}
    assert body["checks"]["queue"] == {"ok": True, "ready": 0, "oldest_wait_s": 0.0}


def test_no_live_worker_is_a_503_saying_so(stranger: Client, settings: Any) -> None:
    settings.SAM3WEB_WORKER_DEAD_AFTER = 15
    status, body, _ = health(stranger)
    assert status == 503
    assert body["reasons"] == ["workers: no live worker"]
    beat(20)  # a worker that stopped writing its heartbeat 20 s ago is dead
    status, body, _ = health(stranger)
    assert status == 503 and body["checks"]["workers"]["live"] == 0
    beat(3)
    assert health(stranger)[0] == 200


def test_a_task_waiting_too_long_is_a_503(stranger: Client, settings: Any, owner: Any) -> None:
    settings.SAM3WEB_HEALTH_MAX_QUEUE_AGE = 60
    beat()
    run = make_run(owner, status="pending")
    tasks.submit_run.enqueue(str(run.pk))
    # One scheduled for later is not waiting yet.
    tasks.poll_run.using(run_after=timezone.now() + dt.timedelta(hours=1)).enqueue(str(run.pk))
    status, body, _ = health(stranger)
    assert status == 200 and body["checks"]["queue"]["ready"] == 1
    DBTaskResult.objects.filter(task_path__endswith="submit_run").update(
        enqueued_at=timezone.now() - dt.timedelta(seconds=90)
    )
    status, body, _ = health(stranger)
    assert status == 503
    queue = body["checks"]["queue"]
    assert queue["ok"] is False and queue["ready"] == 1 and 89 < queue["oldest_wait_s"] < 120
    assert body["reasons"] == [
        f"queue: the oldest ready task has waited {queue['oldest_wait_s']:.0f} s (limit 60 s)"
    ]


def test_storage_that_cannot_be_written_is_a_503(
    stranger: Client, settings: Any, tmp_path: Any
) -> None:
    beat()
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    settings.MEDIA_ROOT = blocker  # every save fails: its "folder" is a file
    status, body, _ = health(stranger)
    assert status == 503
    assert body["checks"]["storage"]["ok"] is False
    assert body["reasons"][0].startswith("storage: builtins.")
    # The failure is named by its kind, not by a message that would show the path.
    assert str(blocker) not in json.dumps(body)


def test_the_probe_leaves_nothing_in_storage(stranger: Client, settings: Any) -> None:
    beat()
    assert health(stranger)[0] == 200
    probes = settings.MEDIA_ROOT / "healthz"
    assert list(probes.iterdir()) == []


def test_no_secret_and_no_other_method(stranger: Client, settings: Any) -> None:
    status, body, response = health(stranger)
    text = response.content.decode()
    assert settings.SECRET_KEY not in text and "postgres" not in text and "sqlite" not in text
    assert stranger.post("/healthz").status_code == 405
    assert stranger.head("/healthz").status_code in (200, 503)


def test_a_plain_http_check_is_not_redirected_when_https_is_required(
    stranger: Client, settings: Any
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    beat()
    assert stranger.get("/healthz").status_code == 200
    assert stranger.get("/runs/").status_code == 301
