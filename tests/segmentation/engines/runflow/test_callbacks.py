"""The callback view: Runflow POSTs a finished run to /callbacks/runflow/<run>/<token>/.

A forged, replayed or garbled delivery changes nothing, is answered with a 4xx (never a 500),
and is visible in the run's delivery log."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from django.test import Client
from django_tasks_db.models import DBTaskResult
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from segmentation.engines.runflow.callbacks import callback_token, callback_url
from segmentation.models import CallbackDelivery, Run
from tests.factories import callback_payload, stored_image

pytestmark = pytest.mark.django_db(transaction=True)

PROVIDER_ID = "3f9c2b1e-0000-4000-8000-000000000001"


@pytest.fixture
def run(owner) -> Run:
    image = stored_image("cat.jpg")
    return Run.objects.create(
        owner=owner,
        image=image,
        input={"prompt": "cat", "max_masks": 3},
        status=Run.Status.QUEUED,
        provider_run_id=PROVIDER_ID,
    )


def url_for(run: Run, token: str | None = None) -> str:
    return f"/callbacks/runflow/{run.id}/{token or callback_token(run.id)}/"


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(
    client: Client, run: Run, body: bytes | dict | list, *, token: str | None = None, **headers
):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        url_for(run, token),
        raw,
        content_type="application/json",
        headers={"Runflow-Request-Id": "req-1", **headers},
    )


def test_a_valid_callback_finishes_the_run(client: Client, run: Run) -> None:
    body = callback_payload()
    response = post(client, run, body)
    assert response.status_code == 200
    assert response.json()["outcome"] == "applied"
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    assert run.output == body["output"]  # verbatim
    assert run.duration_ms == 1834
    assert run.completed_at is not None
    assert run.completed_at.isoformat() == "2026-11-24T06:00:01.957000+00:00"
    assert run.result_source == "callback"
    assert run.artifacts == Run.Artifacts.PENDING
    # Downloads are never done in the request: one copy task is queued instead.
    [queued] = DBTaskResult.objects.filter(task_path__endswith="copy_artifacts")
    assert run.artifacts_task_id == str(queued.id)
    [delivery] = run.deliveries.all()
    assert (delivery.http_status, delivery.outcome, delivery.signature) == (
        200,
        "applied",
        "not_checked",
    )
    assert delivery.request_id == "req-1"
    assert json.loads(delivery.body) == body
    assert delivery.event == "run.completed"


def test_the_callback_url_is_sent_only_with_a_public_url(settings, run: Run) -> None:
    settings.SAM3WEB_PUBLIC_URL = ""
    assert callback_url(run.id) is None
    settings.SAM3WEB_PUBLIC_URL = "https://seg.example.com"
    assert callback_url(run.id) == f"https://seg.example.com{url_for(run)}"
    assert len(callback_token(run.id)) == 64
    assert callback_token(run.id) != callback_token(
        Run.objects.create(image=run.image, input={}).id
    )


@pytest.mark.parametrize(
    ("secrets", "signed_with", "status", "verdict"),
    [
        (["whsec_a"], "whsec_a", 200, "valid"),
        (["whsec_a"], None, 401, "missing"),
        (["whsec_a"], "whsec_wrong", 401, "invalid"),
        (["whsec_new", "whsec_old"], "whsec_old", 200, "valid"),  # rotation
        (["whsec_new", "whsec_old"], "whsec_new", 200, "valid"),
        ([], "whsec_anything", 200, "not_checked"),
    ],
)
def test_signatures(
    client: Client, run: Run, settings, secrets, signed_with, status, verdict
) -> None:
    settings.RUNFLOW_CALLBACK_SECRETS = secrets
    raw = json.dumps(callback_payload()).encode()
    headers = {"Runflow-Signature": sign(raw, signed_with)} if signed_with else {}
    response = post(client, run, raw, **headers)
    assert response.status_code == status
    run.refresh_from_db()
    assert (run.status == Run.Status.SUCCEEDED) == (status == 200)
    [delivery] = run.deliveries.all()
    assert delivery.signature == verdict


def test_a_signature_over_other_bytes_is_refused(client: Client, run: Run, settings) -> None:
    # Same JSON, other bytes: the HMAC is over the raw body, not its meaning.
    settings.RUNFLOW_CALLBACK_SECRETS = ["whsec_a"]
    raw = json.dumps(callback_payload()).encode()
    response = post(
        client,
        run,
        json.dumps(callback_payload(), indent=1).encode(),
        **{"Runflow-Signature": sign(raw, "whsec_a")},
    )
    assert response.status_code == 401
    assert Run.objects.get().status == Run.Status.QUEUED


def test_a_non_ascii_signature_header_is_just_wrong(client: Client, run: Run, settings) -> None:
    settings.RUNFLOW_CALLBACK_SECRETS = ["whsec_a"]
    response = post(client, run, callback_payload(), **{"Runflow-Signature": "é" * 64})
    assert response.status_code == 401


def test_a_wrong_token_is_404_and_logged_on_the_run(client: Client, run: Run) -> None:
    response = post(client, run, callback_payload(), token="0" * 64)
    assert response.status_code == 404
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    [delivery] = run.deliveries.all()
    assert (delivery.http_status, delivery.outcome) == (404, "rejected")


def test_a_forged_delivery_keeps_only_an_excerpt(client: Client, run: Run) -> None:
    big = json.dumps(callback_payload(output={"junk": "x" * 500_000})).encode()
    assert post(client, run, big, token="0" * 64).status_code == 404
    delivery = run.deliveries.get()
    assert len(delivery.body) == 2048 and delivery.body_truncated
    assert delivery.body_bytes == len(big)


def test_a_callback_for_an_unknown_run_is_404(client: Client) -> None:
    response = client.post(
        "/callbacks/runflow/00000000-0000-0000-0000-000000000000/abc/",
        json.dumps(callback_payload()),
        content_type="application/json",
    )
    assert response.status_code == 404
    assert CallbackDelivery.objects.get().run is None


def test_a_replayed_delivery_is_acknowledged_and_ignored(client: Client, run: Run) -> None:
    raw = json.dumps(callback_payload()).encode()
    assert post(client, run, raw).json()["outcome"] == "applied"
    second = post(client, run, raw)
    assert second.status_code == 200  # so Runflow stops retrying
    assert second.json()["outcome"] == "duplicate"
    assert DBTaskResult.objects.filter(task_path__endswith="copy_artifacts").count() == 1
    assert [d.outcome for d in run.deliveries.order_by("received_at")] == ["applied", "duplicate"]


def test_failed_after_completed_changes_nothing(client: Client, run: Run) -> None:
    post(client, run, callback_payload())
    late = post(client, run, callback_payload("failed", failure_message="too late"))
    assert late.status_code == 200
    assert late.json()["outcome"] == "late"
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    assert run.failure_message == ""


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("failed", Run.Status.FAILED),
        ("canceled", Run.Status.CANCELED),
        ("cancelled", Run.Status.CANCELED),
        ("partial_succeeded", Run.Status.SUCCEEDED),
    ],
)
def test_every_terminal_status(client: Client, run: Run, status: str, expected) -> None:
    extra = {"failure_code": "MODEL_ERROR", "failure_stage_code": "inference"}
    response = post(client, run, callback_payload(status, failure_message="It broke", **extra))
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == expected
    if expected == Run.Status.FAILED:
        assert (run.failure_code, run.failure_stage, run.failure_message) == (
            "MODEL_ERROR",
            "inference",
            "It broke",
        )


def test_a_failed_run_shows_runflows_reason(signed_in: Client, run: Run) -> None:
    post(
        signed_in,
        run,
        callback_payload("failed", failure_code="MODEL_ERROR", failure_message="No GPU"),
    )
    page = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "Runflow could not complete this run" in page
    assert "No GPU" in page and "MODEL_ERROR" in page
    assert "Callback deliveries" in page


def test_a_callback_before_the_submit_task_saved_the_answer(client: Client, run: Run) -> None:
    # Runflow can finish and call back before our worker has stored its 201.
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUBMITTING, provider_run_id="")
    assert post(client, run, callback_payload()).status_code == 200
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    assert run.provider_run_id == PROVIDER_ID


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'"succeeded"', "must be a JSON object"),
        (json.dumps(callback_payload(run_id="someone-else")).encode(), "does not match"),
        (json.dumps(callback_payload(status="exploded")).encode(), "unknown status"),
        (json.dumps({"status": "succeeded"}).encode(), "run_id is missing"),
    ],
)
def test_garbled_bodies_are_400(client: Client, run: Run, body: bytes, reason: str) -> None:
    response = post(client, run, body)
    assert response.status_code == 400
    assert reason in response.json()["reason"]
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert run.deliveries.get().outcome == "rejected"


def test_a_10_mb_body_is_refused_unread(client: Client, run: Run) -> None:
    big = json.dumps(callback_payload(output={"junk": "x" * (10 * 1024 * 1024)})).encode()
    response = post(client, run, big)
    assert response.status_code == 413
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    delivery = run.deliveries.get()
    assert delivery.body_truncated and delivery.body_bytes >= 10 * 1024 * 1024
    assert len(delivery.body) == 0


def test_only_post(client: Client, run: Run) -> None:
    assert client.get(url_for(run)).status_code == 405


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = [
    "event",
    "run_id",
    "status",
    "output",
    "duration_ms",
    "created_at",
    "completed_at",
    "metadata",
    "cost",
    "failure_code",
    "failure_message",
    "failure_stage_code",
]


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=st.dictionaries(st.sampled_from(FIELDS), JSON, min_size=1, max_size=4))
def test_wrong_types_in_any_field_never_500(client: Client, run: Run, changes) -> None:
    Run.objects.filter(pk=run.pk).update(status=Run.Status.QUEUED)
    body = {**callback_payload(), **changes}
    response = post(client, run, json.dumps(body).encode())
    assert response.status_code in (200, 400), response.content
    status = Run.objects.get(pk=run.pk).status
    if response.status_code == 400:
        assert status == Run.Status.QUEUED  # nothing half-applied
