"""Callbacks to API callers: Runflow's payload and headers, signed with the teammate's secret
so Runflow's own verification code accepts it; 3 attempts 1 s and 2 s apart on 5xx and network
errors only; every attempt recorded; the URL checked again when sending."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from accounts.models import Profile
from segmentation.models import CallerCallback, Run
from tests.api.conftest import SAM3_PATH, body
from tests.api.receiver import CallbackReceiver
from tests.factories import drain

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver(settings) -> Iterator[CallbackReceiver]:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]
    settings.SAM3WEB_CALLER_CALLBACK_BACKOFF = 0.05
    settings.SAM3WEB_CALLER_CALLBACK_TIMEOUT = 1.0
    with CallbackReceiver() as receiver:
        yield receiver


def verified(raw: bytes, signature: str, secrets: list[str]) -> bool:
    """How Runflow's docs tell a receiver to check a callback."""
    for secret in secrets:
        expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, signature):
            return True
    return False


def make(api: httpx.Client, url: str, **extra: Any) -> str:
    response = api.post(SAM3_PATH, json={**body(), "callback_url": url, **extra})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def callbacks_done(run_id: str, count: int = 1) -> Any:
    def done() -> bool:
        rows = CallerCallback.objects.filter(run_id=run_id)
        return rows.count() >= count and not rows.filter(state="sending").exists()

    return done


def test_a_finished_run_calls_back_signed_as_runflow_signs(
    api: httpx.Client, receiver: CallbackReceiver, owner, fast_polling
) -> None:
    run_id = make(api, receiver.url("/ok"), metadata={"job": "j-1"})
    drain(callbacks_done(run_id))
    [got] = receiver.received
    assert got.headers["content-type"] == "application/json"
    assert got.headers["runflow-request-id"]
    secret = Profile.of(owner).callback_secret
    assert secret.startswith("whsec_")
    assert verified(got.body, got.headers["runflow-signature"], [secret])
    assert not verified(got.body, got.headers["runflow-signature"], ["whsec_other"])
    payload = json.loads(got.body)
    assert set(payload) == {
        "event",
        "run_id",
        "status",
        "output",
        "duration_ms",
        "created_at",
        "completed_at",
        "metadata",
    }
    assert payload["event"] == "run.completed"
    assert payload["status"] == "succeeded"
    assert payload["run_id"] == run_id
    assert payload["metadata"] == {"job": "j-1"}
    assert payload["created_at"].endswith("+00:00")
    mask = payload["output"]["model_data"]["masks"][0]
    assert httpx.get(mask["url"]).status_code == 200  # our copy, no header needed
    row = CallerCallback.objects.get(run_id=run_id)
    assert row.state == "delivered"
    assert [a["http_status"] for a in row.attempts] == [200]
    # The run page and the API list the delivery.
    listed = api.get(f"/v1/runs/{run_id}/callback").json()["items"]
    assert listed[0]["request_id"] == got.headers["runflow-request-id"]
    assert listed[0]["state"] == "delivered"


def test_a_failed_run_calls_back_with_run_failed(
    api: httpx.Client, receiver: CallbackReceiver, standin, fast_polling
) -> None:
    standin.outcome = "failed"
    run_id = make(api, receiver.url("/ok"))
    drain(callbacks_done(run_id))
    payload = json.loads(receiver.received[0].body)
    assert (payload["event"], payload["status"], payload["output"]) == (
        "run.failed",
        "failed",
        None,
    )


def test_a_run_runflow_refuses_calls_back_with_run_failed(
    api: httpx.Client, receiver: CallbackReceiver, settings, fast_polling
) -> None:
    from tests.factories import BROKE_KEY

    settings.RUNFLOW_API_KEY = BROKE_KEY  # Runflow: 402 INSUFFICIENT_CREDIT
    run_id = make(api, receiver.url("/ok"))
    drain(callbacks_done(run_id))
    payload = json.loads(receiver.received[0].body)
    assert payload["status"] == "failed"
    assert api.get(f"/v1/runs/{run_id}").json()["failure_code"] == "INSUFFICIENT_CREDIT"


def test_a_receiver_that_answers_500_gets_3_attempts_1_s_and_2_s_apart(
    api: httpx.Client, receiver: CallbackReceiver, settings, fast_polling
) -> None:
    settings.SAM3WEB_CALLER_CALLBACK_BACKOFF = 1.0  # Runflow's own spacing
    run_id = make(api, receiver.url("/status/500"))
    drain(callbacks_done(run_id), timeout=30)
    times = [r.at for r in receiver.received]
    assert len(times) == 3
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert 0.9 <= first_gap < 1.8, first_gap
    assert 1.9 <= second_gap < 3.0, second_gap
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1  # the same payload every time
    assert len({r.headers["runflow-request-id"] for r in receiver.received}) == 1
    row = CallerCallback.objects.get(run_id=run_id)
    assert row.state == "failed"
    assert [a["http_status"] for a in row.attempts] == [500, 500, 500]


def test_a_receiver_that_recovers_gets_it_on_a_later_attempt(
    api: httpx.Client, receiver: CallbackReceiver, fast_polling
) -> None:
    run_id = make(api, receiver.url("/flaky/1"))
    drain(callbacks_done(run_id))
    row = CallerCallback.objects.get(run_id=run_id)
    assert [a["http_status"] for a in row.attempts] == [500, 200]
    assert row.state == "delivered"


@pytest.mark.parametrize("path", ["/status/400", "/status/401", "/status/404", "/redirect"])
def test_a_4xx_or_a_redirect_is_the_receivers_verdict_not_retried(
    api: httpx.Client, receiver: CallbackReceiver, fast_polling, path: str
) -> None:
    run_id = make(api, receiver.url(path))
    drain(callbacks_done(run_id))
    assert [r.path for r in receiver.received] == [path]  # the redirect was not followed
    assert CallerCallback.objects.get(run_id=run_id).state == "failed"


def test_a_slow_receiver_times_out_and_is_tried_again(
    api: httpx.Client, receiver: CallbackReceiver, fast_polling
) -> None:
    # Its 30 s wait would hold a worker; each attempt is cut at the timeout (1 s here).
    run_id = make(api, receiver.url("/slow/30"))
    drain(callbacks_done(run_id), timeout=30)
    row = CallerCallback.objects.get(run_id=run_id)
    assert row.state == "failed"
    assert len(row.attempts) == 3
    assert all(a["http_status"] is None and "No answer" in a["error"] for a in row.attempts)
    assert all(a["ms"] < 3000 for a in row.attempts)


def test_a_receiver_that_closes_the_connection_is_tried_again(
    api: httpx.Client, receiver: CallbackReceiver, fast_polling
) -> None:
    run_id = make(api, receiver.url("/close"))
    drain(callbacks_done(run_id))
    row = CallerCallback.objects.get(run_id=run_id)
    assert len(row.attempts) == 3
    assert all(a["http_status"] is None and a["error"] for a in row.attempts)


def test_the_url_is_checked_again_when_sending(
    api: httpx.Client, receiver: CallbackReceiver, settings, fast_polling
) -> None:
    run_id = make(api, receiver.url("/ok"))
    settings.SAM3WEB_OUTBOUND_ALLOW = []  # as if its host now pointed somewhere private
    drain(callbacks_done(run_id))
    assert receiver.received == []
    row = CallerCallback.objects.get(run_id=run_id)
    assert row.state == "failed"
    assert len(row.attempts) == 1  # no retry: a private address stays private
    assert "private" in row.attempts[0]["error"]


def test_one_callback_per_run_end_however_often_the_run_is_looked_at(
    api: httpx.Client, receiver: CallbackReceiver, fast_polling
) -> None:
    from segmentation.tasks import changed

    run_id = make(api, receiver.url("/ok"))
    drain(callbacks_done(run_id))
    for _ in range(3):
        changed(Run.objects.get(pk=run_id))
    drain(callbacks_done(run_id))
    assert len(receiver.received) == 1


def test_a_caller_can_ask_for_the_callback_again(
    api: httpx.Client, receiver: CallbackReceiver, fast_polling
) -> None:
    run_id = make(api, receiver.url("/ok"))
    drain(callbacks_done(run_id))
    again = api.post(f"/v1/runs/{run_id}/callback-redeliveries")
    assert again.status_code == 201
    drain(callbacks_done(run_id, count=2))
    assert len(receiver.received) == 2
    assert (
        receiver.received[0].body == receiver.received[1].body
        or json.loads(receiver.received[0].body)["run_id"]
        == json.loads(receiver.received[1].body)["run_id"]
    )


def test_after_a_rotation_the_old_secret_signs_for_24_hours(
    api: httpx.Client, receiver: CallbackReceiver, owner, fast_polling
) -> None:
    profile = Profile.of(owner)
    old = profile.callback_secret
    profile.rotate()
    new = profile.callback_secret
    assert new != old and new.startswith("whsec_")
    run_id = make(api, receiver.url("/ok"))
    drain(callbacks_done(run_id))
    got = receiver.received[-1]
    assert verified(got.body, got.headers["runflow-signature"], [old])
    # A day later (or once the teammate ends the grace), the new one signs.
    Profile.objects.filter(pk=profile.pk).update(
        previous_until=profile.previous_until - dt.timedelta(hours=25)  # type: ignore[operator]
    )
    run_id = make(api, receiver.url("/ok"))
    drain(callbacks_done(run_id))
    got = receiver.received[-1]
    assert verified(got.body, got.headers["runflow-signature"], [new])
    assert not verified(got.body, got.headers["runflow-signature"], [old])


def test_runs_without_a_callback_url_send_nothing(
    api: httpx.Client, receiver: CallbackReceiver, fast_polling
) -> None:
    response = api.post(SAM3_PATH, json=body())
    run_id = response.json()["id"]
    drain(lambda: Run.objects.get(pk=run_id).settled)
    assert not CallerCallback.objects.exists()
    assert receiver.received == []


def test_a_starting_worker_sends_the_callbacks_a_stopped_one_left_behind(
    receiver: CallbackReceiver, owner, standin
) -> None:
    from tests.factories import finished_run, worker_until_idle

    # A run that ended as its worker died, before its callback was made...
    ended = finished_run(owner, masks=1)
    Run.objects.filter(pk=ended.pk).update(callback_url=receiver.url("/ok"))
    # ...and a callback whose next attempt's task was lost.
    other = finished_run(owner, masks=1)
    Run.objects.filter(pk=other.pk).update(callback_url=receiver.url("/ok"))
    CallerCallback.objects.create(
        run=other,
        key="succeeded",
        event="run.completed",
        url=receiver.url("/ok"),
        request_id="r-1",
        body='{"run_id": "x"}',
    )
    done = worker_until_idle(standin, SAM3WEB_OUTBOUND_ALLOW="127.0.0.1")
    assert "Queued 2" in done.stdout
    assert CallerCallback.objects.filter(state="delivered").count() == 2
    assert sorted(json.loads(r.body)["run_id"] for r in receiver.received) == sorted(
        [str(ended.pk), "x"]
    )
