"""Budgets: a run is charged the list price when accepted, settled to Runflow's cost when that
arrives, refunded when it fails; nobody spends past a budget however many requests arrive at
once; the API's rate limit answers 429 with Retry-After."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.test import Client

from accounts import budgets
from accounts.models import ApiToken, Profile
from segmentation import runs
from segmentation.models import Run
from tests.api.conftest import SAM3_PATH, body
from tests.factories import finished_run, make_run, start_gunicorn, stored_image, worker_env
from tests.postgres_server import PostgresServer, binaries
from tests.sample_images import ROOT

PRICE = Decimal("0.005")


def set_budget(user: Any, dollars: str | None) -> None:
    profile = Profile.of(user)
    profile.monthly_budget = None if dollars is None else Decimal(dollars)
    profile.save()


def fire(url: str, token: str, count: int, **headers: str) -> list[httpx.Response]:
    """``count`` creates at the same instant, each from its own client."""
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(count)

    def send() -> None:
        with httpx.Client(timeout=60) as client:
            start.wait()
            response = client.post(
                url + SAM3_PATH,
                json=body(),
                headers={"Authorization": f"Bearer {token}", **headers},
            )
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=send) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


# --- what a run counts ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_counts_the_list_price_then_its_cost_and_nothing_if_it_fails(owner) -> None:
    run = make_run(owner, status=Run.Status.QUEUED)
    assert budgets.spent(owner) == PRICE
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, cost=Decimal("0.0042"))
    assert budgets.spent(owner) == Decimal("0.0042")
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED, cost=None)
    assert budgets.spent(owner) == 0
    Run.objects.filter(pk=run.pk).update(status=Run.Status.NOT_SUBMITTED)
    assert budgets.spent(owner) == 0


@pytest.mark.django_db
def test_a_deleted_run_still_counts(owner) -> None:
    run = finished_run(owner, masks=1)
    Run.objects.filter(pk=run.pk).update(cost=Decimal("0.005"))
    assert runs.delete_run(run.pk)
    assert budgets.spent(owner) == PRICE
    assert budgets.spent() == PRICE


@pytest.mark.django_db
def test_last_months_runs_do_not_count(owner) -> None:
    run = make_run(owner)
    before = budgets.month_start() - dt.timedelta(seconds=1)
    Run.objects.filter(pk=run.pk).update(created_at=before)
    assert budgets.spent(owner) == 0


@pytest.mark.django_db
def test_a_spent_budget_refuses_a_new_run_of_any_kind(owner, standin) -> None:
    set_budget(owner, "0.01")
    image = stored_image()
    for _ in range(2):
        runs.create_run(owner=owner, image=image, input={"prompt": "cat"})
    with pytest.raises(budgets.BudgetExceeded, match=r"monthly budget of \$0.01 is spent"):
        runs.create_run(owner=owner, image=image, input={"prompt": "cat"})
    assert Run.objects.count() == 2
    assert budgets.standing(owner).left == 0
    set_budget(owner, None)  # lifted
    runs.create_run(owner=owner, image=image, input={"prompt": "cat"})


@pytest.mark.django_db
def test_sending_a_refused_run_again_is_charged_again(owner, standin) -> None:
    set_budget(owner, "0.01")  # budgets are whole cents: two runs at half a cent
    refused = make_run(owner, status=Run.Status.NOT_SUBMITTED)
    make_run(owner, status=Run.Status.QUEUED)
    make_run(owner, status=Run.Status.QUEUED)
    with pytest.raises(budgets.BudgetExceeded):
        runs.resubmit(refused)
    refused.refresh_from_db()
    assert refused.status == Run.Status.NOT_SUBMITTED


@pytest.mark.django_db
def test_the_team_budget_counts_everyones_runs(owner, teammate, settings, standin) -> None:
    settings.SAM3WEB_TEAM_MONTHLY_BUDGET = Decimal("0.01")
    make_run(teammate, status=Run.Status.QUEUED)
    image = stored_image()
    runs.create_run(owner=owner, image=image, input={"prompt": "cat"})
    with pytest.raises(budgets.BudgetExceeded, match="team's monthly budget"):
        runs.create_run(owner=owner, image=image, input={"prompt": "cat"})
    assert "team's" in budgets.standing(owner).text


@pytest.mark.django_db
def test_the_api_says_insufficient_credit(client: Client, owner, token: str, standin) -> None:
    set_budget(owner, "0")
    response = client.post(
        SAM3_PATH,
        data=json.dumps(body()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 402
    assert response.json()["code"] == "INSUFFICIENT_CREDIT"
    assert "Team page" in response.json()["message"]
    assert Run.objects.count() == 0


# --- at once ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_ten_requests_at_once_against_a_budget_for_two_make_two_runs(
    live_server, owner, token: str, standin
) -> None:
    set_budget(owner, "0.01")
    answers = fire(live_server.url, token, 10)
    codes = sorted(a.status_code for a in answers)
    assert codes == [201, 201] + [402] * 8, [a.text[:200] for a in answers]
    assert all(a.json()["code"] == "INSUFFICIENT_CREDIT" for a in answers if a.status_code == 402)
    assert Run.objects.count() == 2
    assert budgets.spent(owner) == Decimal("0.01")


@pytest.fixture
def postgres_app(standin) -> Iterator[tuple[str, str]]:
    """The app under gunicorn (2 processes × 8 threads) on a throwaway PostgreSQL, with a
    teammate whose budget covers two runs: (base URL, their token)."""
    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (bin/setup --dev installs it)")
    server = PostgresServer().start()
    env = worker_env(standin, DATABASE_URL=server.url, SAM3WEB_API_RATE_PER_MINUTE="1000")
    proc = None
    try:
        server.migrate(env, ROOT)
        setup = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SETUP],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert setup.returncode == 0, setup.stderr
        token = setup.stdout.strip().splitlines()[-1]
        proc, url = start_gunicorn(env, workers=2, threads=8, ready_path="/v1/runs")
        yield url, token
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        server.stop()


SETUP = """
from decimal import Decimal
from django.contrib.auth.models import User
from accounts.models import ApiToken, Profile
user = User.objects.create_user("ada", password="correct horse battery")
profile = Profile.of(user)
profile.monthly_budget = Decimal("0.01")
profile.save()
print(ApiToken.issue(user, "pg")[1])
"""


def test_on_postgresql_ten_requests_at_once_against_a_budget_for_two_make_two_runs(
    postgres_app: tuple[str, str],
) -> None:
    url, token = postgres_app
    answers = fire(url, token, 10)
    codes = sorted(a.status_code for a in answers)
    assert codes == [201, 201] + [402] * 8, [a.text[:200] for a in answers]
    listed = httpx.get(
        url + "/v1/runs", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).json()
    assert len(listed["items"]) == 2


# --- the rate limit ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_rate_limit_answers_429_with_retry_after(
    client: Client, owner, token: str, settings, standin
) -> None:
    settings.SAM3WEB_API_RATE_PER_MINUTE = 3

    def post(**headers: Any) -> Any:
        return client.post(
            SAM3_PATH,
            data=json.dumps(body()),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
            **headers,
        )

    assert [post(HTTP_IDEMPOTENCY_KEY=f"k{n}").status_code for n in range(3)] == [201] * 3
    limited = post()
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(limited["Retry-After"]) <= 60
    # A replay is no new run: it is answered, not limited.
    assert post(HTTP_IDEMPOTENCY_KEY="k0").status_code == 201
    # Runs made in the browser do not count against the API's limit.
    assert Run.objects.filter(token__isnull=False).count() == 3


@pytest.mark.django_db
def test_each_teammate_has_their_own_rate(
    client: Client, owner, teammate, token: str, settings, standin
) -> None:
    settings.SAM3WEB_API_RATE_PER_MINUTE = 1
    _row, theirs = ApiToken.issue(teammate, "ci")
    for raw in (token, theirs):
        response = client.post(
            SAM3_PATH,
            data=json.dumps(body()),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert response.status_code == 201
