"""Reading runs through /v1/: one run or the caller's list, in Runflow's run-object shape, with
every output URL absolute, signed, served by sam3web without any header, and gone with its
run."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken, Profile
from api.serialize import FILE_SALT
from segmentation import runs
from segmentation.models import Run
from tests.api.conftest import SAM3_PATH, body
from tests.factories import decode_image, drain, finished_run, make_run

pytestmark = pytest.mark.django_db


def get(client: Client, token: str, path: str, **params: Any) -> Any:
    return client.get(path, params, HTTP_AUTHORIZATION=f"Bearer {token}")


def content(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def test_a_finished_run_reads_as_runflows_run_object(client: Client, owner, token: str) -> None:
    run = finished_run(owner, masks=2, metadata={"job": 7})
    Run.objects.filter(pk=run.pk).update(
        cost=Decimal("0.0045"), completed_at=timezone.now(), duration_ms=812
    )
    data = get(client, token, f"/v1/runs/{run.pk}").json()
    assert data["id"] == str(run.pk)
    assert data["status_code"] == "succeeded"
    assert data["cost"] == "0.0045"
    assert data["duration_ms"] == 812
    assert data["metadata"] == {"job": 7}
    assert data["completed_at"].endswith("+00:00")
    assert data["failure_code"] is None and data["failure_message"] is None
    output = data["output"]
    assert set(output) >= {"outputs", "model_data"}
    model_data = output["model_data"]
    assert len(model_data["masks"]) == 2
    assert model_data["scores"] == [0.9, 0.8]
    cx, cy, w, h = model_data["boxes"][0]
    assert 0 < cx < 1 and 0 < cy < 1 and 0 < w < 1 and 0 < h < 1
    for mask in model_data["masks"]:
        assert mask["url"].startswith("http://testserver/v1/files/")
        assert (mask["width"], mask["height"]) == (451, 300)
        served = Client().get(mask["url"].removeprefix("http://testserver"))
        assert served.status_code == 200
        assert served["Content-Type"] == "image/png"
        assert decode_image(content(served)).size == (451, 300)
    assert [o["url"] for o in output["outputs"]] == [m["url"] for m in model_data["masks"]]


def test_scores_and_boxes_come_only_when_asked_for(client: Client, owner, token: str) -> None:
    run = finished_run(owner, include_scores=False, include_boxes=False)
    model_data = get(client, token, f"/v1/runs/{run.pk}").json()["output"]["model_data"]
    assert "scores" not in model_data and "boxes" not in model_data
    assert len(model_data["masks"]) == 2


def test_sync_mode_puts_the_files_inside_the_answer(client: Client, owner, token: str) -> None:
    run = finished_run(owner, sync_mode=True)
    masks = get(client, token, f"/v1/runs/{run.pk}").json()["output"]["model_data"]["masks"]
    assert all(m["url"].startswith("data:image/png;base64,") for m in masks)


@pytest.mark.parametrize(
    ("status", "fields", "expected"),
    [
        (Run.Status.PENDING, {}, ("queued", None)),
        (Run.Status.SUBMITTING, {}, ("queued", None)),
        (Run.Status.RUNNING, {}, ("running", None)),
        (
            Run.Status.SUCCEEDED,
            {"artifacts": Run.Artifacts.COPYING},
            ("running", None),
        ),
        (
            Run.Status.FAILED,
            {"failure_code": "INFERENCE_ERROR", "failure_message": "GPU fell over"},
            ("failed", "INFERENCE_ERROR"),
        ),
        (
            Run.Status.NOT_SUBMITTED,
            {"error_code": "INSUFFICIENT_CREDIT", "error_message": "Top up."},
            ("failed", "INSUFFICIENT_CREDIT"),
        ),
        (Run.Status.STALE, {"error_message": "No result in 30 minutes."}, ("failed", "NO_RESULT")),
        (Run.Status.CANCELED, {}, ("canceled", None)),
    ],
)
def test_each_status_reads_as_runflows(
    client: Client, owner, token: str, status: str, fields: dict[str, Any], expected: Any
) -> None:
    run = make_run(owner, status=status, **fields)
    data = get(client, token, f"/v1/runs/{run.pk}").json()
    assert (data["status_code"], data["failure_code"]) == expected
    assert data["output"] is None
    if expected[0] == "failed":
        assert data["failure_message"]
        assert data["cost"] == "0"


@pytest.mark.parametrize("run_id", ["nope", "00000000-0000-4000-8000-000000000000", "1"])
def test_an_unknown_run_is_run_not_found(client: Client, token: str, run_id: str) -> None:
    response = get(client, token, f"/v1/runs/{run_id}")
    assert response.status_code == 404
    assert response.json()["code"] == "RUN_NOT_FOUND"


def test_teammates_read_each_others_runs_but_list_their_own(
    client: Client, owner, teammate, token: str
) -> None:
    theirs = finished_run(teammate)
    mine = finished_run(owner)
    assert get(client, token, f"/v1/runs/{theirs.pk}").status_code == 200
    listed = get(client, token, "/v1/runs").json()
    assert [item["id"] for item in listed["items"]] == [str(mine.pk)]


def test_another_teammates_run_cannot_be_written_to(
    client: Client, owner, teammate, token: str
) -> None:
    theirs = finished_run(teammate, masks=1)
    Run.objects.filter(pk=theirs.pk).update(callback_url="https://example.com/hook")
    response = client.post(
        f"/v1/runs/{theirs.pk}/callback-redeliveries", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 404
    assert response.json()["code"] == "RUN_NOT_FOUND"
    assert not theirs.caller_callbacks.exists()


def test_the_list_pages_by_cursor_newest_first(client: Client, owner, token: str) -> None:
    made = []
    for minutes in range(7):
        run = make_run(owner)
        Run.objects.filter(pk=run.pk).update(
            created_at=timezone.now() - dt.timedelta(minutes=minutes)
        )
        made.append(str(run.pk))
    seen: list[str] = []
    page = get(client, token, "/v1/runs", limit=3).json()
    pages = 1
    while True:
        seen += [item["id"] for item in page["items"]]
        if not page["next_pq"]:
            break
        assert page["next"].startswith("http://testserver/v1/runs?")
        assert "limit=3" in page["next"]
        page = get(client, token, "/v1/runs", limit=3, pq=page["next_pq"]).json()
        pages += 1
    assert seen == made
    assert pages == 3


def test_the_list_filters_by_status(client: Client, owner, token: str) -> None:
    done = finished_run(owner)
    failed = make_run(owner, status=Run.Status.FAILED)
    refused = make_run(owner, status=Run.Status.NOT_SUBMITTED)
    make_run(owner, status=Run.Status.RUNNING)

    def ids(**params: Any) -> set[str]:
        response = get(client, token, "/v1/runs", **params)
        assert response.status_code == 200, response.content
        return {item["id"] for item in response.json()["items"]}

    assert ids(status="succeeded") == {str(done.pk)}
    assert ids(status="failed") == {str(failed.pk), str(refused.pk)}
    assert ids(q="status_code:succeeded") == {str(done.pk)}
    assert len(ids(status="succeeded,failed")) == 3


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"pq": "forged"}, "pq"),
        ({"pq": signing.dumps(["x", "y"], salt="other")}, "pq"),
        ({"status": "done"}, "status"),
        ({"q": "created_at>2026-01-01"}, "q"),
    ],
)
def test_bad_list_parameters_are_named(
    client: Client, token: str, params: dict[str, str], loc: str
) -> None:
    response = get(client, token, "/v1/runs", **params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", loc]


def test_file_links_work_without_headers_and_stop_with_the_run(
    client: Client, owner, token: str
) -> None:
    run = finished_run(owner, masks=1)
    url = get(client, token, f"/v1/runs/{run.pk}").json()["output"]["model_data"]["masks"][0]["url"]
    path = url.removeprefix("http://testserver")
    assert Client().get(path).status_code == 200
    runs.delete_run(run.pk)
    gone = Client().get(path)
    assert gone.status_code == 404
    assert gone.json()["code"] == "NOT_FOUND"


def test_file_links_last_their_lifetime_and_no_longer(
    client: Client, owner, token: str, settings, monkeypatch
) -> None:
    run = finished_run(owner, masks=1)
    url = get(client, token, f"/v1/runs/{run.pk}").json()["output"]["model_data"]["masks"][0]["url"]
    path = url.removeprefix("http://testserver")
    later = timezone.now().timestamp() + 24 * 3600 + 60
    monkeypatch.setattr("django.core.signing.time.time", lambda: later)
    assert Client().get(path).status_code == 200  # a day on: still works (a week by default)
    settings.SAM3WEB_API_FILE_URL_TTL = 24 * 3600
    assert Client().get(path).status_code == 404


def test_a_forged_or_altered_file_link_is_not_found(client: Client, owner, token: str) -> None:
    run = finished_run(owner, masks=1)
    forged = signing.dumps([str(run.pk), "mask", 0], salt="something else")
    assert Client().get(f"/v1/files/{forged}/mask-1.png").status_code == 404
    real = signing.dumps([str(run.pk), "mask", 0], salt=FILE_SALT)
    assert Client().get(f"/v1/files/{real}/mask-1.png").status_code == 200
    assert Client().get(f"/v1/files/{real[:-2]}xx/mask-1.png").status_code == 404


def test_an_api_run_goes_end_to_end_over_real_sockets(
    api: httpx.Client, owner, fast_polling
) -> None:
    made = api.post(
        SAM3_PATH, json=body(box_prompts=[{"x_min": 30, "y_min": 20, "x_max": 300, "y_max": 280}])
    )
    assert made.status_code == 201
    run_id = made.json()["id"]
    drain(lambda: Run.objects.get(pk=run_id).settled)
    data = api.get(f"/v1/runs/{run_id}").json()
    assert data["status_code"] == "succeeded"
    assert data["cost"] is not None and Decimal(data["cost"]) > 0
    assert data["started_at"] and data["completed_at"]
    mask = data["output"]["model_data"]["masks"][0]
    served = httpx.get(mask["url"])
    assert served.status_code == 200
    assert decode_image(served.content).size == (451, 300)
    listed = api.get("/v1/runs", params={"status": "succeeded"}).json()
    assert [item["id"] for item in listed["items"]] == [run_id]
    stored = Run.objects.get(pk=run_id)
    assert stored.token == ApiToken.objects.get(user=owner)


def test_the_list_filters_by_client_ref(client: Client, owner, token: str) -> None:
    wanted = make_run(owner, client_ref="row-17")
    make_run(owner, client_ref="row-18")
    items = get(client, token, "/v1/runs", q="client_ref:row-17").json()["items"]
    assert [item["id"] for item in items] == [str(wanted.pk)]
    both = get(client, token, "/v1/runs", q="status_code:succeeded AND client_ref:row-18")
    assert [item["client_ref"] for item in both.json()["items"]] == ["row-18"]


@pytest.mark.django_db(transaction=True)
def test_sam3webs_own_runflow_client_works_against_sam3webs_api(
    live_server, owner, token: str, standin
) -> None:
    """Code written for Runflow, changed only in its base URL and key: here the Runflow client
    sam3web itself uses."""
    from segmentation.engines.runflow.client import RunflowClient, RunflowError

    with RunflowClient(base_url=live_server.url, api_key=token, max_attempts=1) as runflow:
        made = runflow.create_run(
            input=body()["input"], idempotency_key="first", client_ref="ref-1", metadata={"a": 1}
        )
        assert made["status_code"] == "queued"
        assert runflow.get_run(made["id"])["client_ref"] == "ref-1"
        found = runflow.find_run_by_client_ref("ref-1")
        assert found is not None and found["id"] == made["id"]
        again = runflow.create_run(
            input=body()["input"], idempotency_key="first", client_ref="ref-1", metadata={"a": 1}
        )
        assert again["id"] == made["id"]
        with pytest.raises(RunflowError) as refused:
            runflow.create_run(input={**body()["input"], "max_masks": 99}, idempotency_key="x")
        assert refused.value.status_code == 422
        assert refused.value.code == "VALIDATION_ERROR"
        assert "input.max_masks" in refused.value.summary()
    with RunflowClient(base_url=live_server.url, api_key="sam3web_wrong", max_attempts=1) as bad:
        with pytest.raises(RunflowError) as denied:
            bad.get_run(made["id"])
        assert denied.value.status_code == 401


@pytest.mark.parametrize("limit", ["²", "٣", "1e2", " 5", "5.0", "00000000001"])
def test_a_limit_that_is_not_plain_digits_is_refused(
    client: Client, token: str, limit: str
) -> None:
    response = get(client, token, "/v1/runs", limit=limit)
    if limit == " 5":
        assert response.status_code == 200
        return
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "limit"]


def test_another_teammates_callback_url_and_deliveries_stay_theirs(
    client: Client, owner, teammate, token: str
) -> None:
    theirs = finished_run(teammate, masks=1)
    Run.objects.filter(pk=theirs.pk).update(callback_url="https://example.com/hook?secret=s3")
    assert get(client, token, f"/v1/runs/{theirs.pk}").json()["callback_url"] is None
    assert get(client, token, f"/v1/runs/{theirs.pk}/callback").status_code == 404
    _row, their_token = ApiToken.issue(teammate, "own")
    own = get(client, their_token, f"/v1/runs/{theirs.pk}").json()
    assert own["callback_url"] == "https://example.com/hook?secret=s3"


def test_file_links_answer_head(client: Client, owner, token: str) -> None:
    run = finished_run(owner, masks=1)
    url = get(client, token, f"/v1/runs/{run.pk}").json()["output"]["model_data"]["masks"][0]["url"]
    head = Client().head(url.removeprefix("http://testserver"))
    assert head.status_code == 200
    assert head["Content-Type"] == "image/png"


def test_a_token_is_checked_as_runflows_auth_me_checks_a_key(
    client: Client, owner, token: str, settings
) -> None:
    settings.SAM3WEB_TEAM_MONTHLY_BUDGET = Decimal("10.00")
    profile = Profile.of(owner)
    profile.monthly_budget = Decimal("1.00")
    profile.save()
    make_run(owner, status=Run.Status.QUEUED)
    me = get(client, token, "/v1/auth/me")
    assert me.status_code == 200
    data = me.json()
    assert data["username"] == "ada"
    assert data["token"]["name"] == "laptop"
    assert data["token"]["hint"] == token[:12]
    assert data["budget"] == {
        "monthly": "1",
        "spent_this_month": "0.005",
        "team_monthly": "10",
        "team_spent_this_month": "0.005",
        "left": "0.995",
        "price_per_run": "0.005",
    }
    assert data["rate_limit_per_minute"] == settings.SAM3WEB_API_RATE_PER_MINUTE
    assert client.get("/v1/auth/me").status_code == 401


def test_the_statuses_are_listed_in_order(client: Client, token: str) -> None:
    items = get(client, token, "/v1/runs/statuses").json()["items"]
    assert items == ["queued", "dispatching", "running", "succeeded", "failed", "canceled"]
