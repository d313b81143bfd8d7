"""The usage page: what the team spends, per teammate and per month, added up by the database."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken
from segmentation.models import Batch, Run
from segmentation.usage import month_starts
from tests.factories import stored_image

pytestmark = pytest.mark.django_db

S = Run.Status
PRICE = Decimal("0.005")


@pytest.fixture
def picture(owner):
    return stored_image("cat.jpg")


def make_run(
    picture, owner, status, *, cost=None, created=None, duration_ms=None, token=None
) -> Run:
    run = Run.objects.create(
        owner=owner,
        image=picture,
        input={"prompt": "cat"},
        status=status,
        cost=None if cost is None else Decimal(cost),
        duration_ms=duration_ms,
        token=token,
    )
    if created is not None:  # created_at is auto_now_add: set it afterwards
        Run.objects.filter(pk=run.pk).update(created_at=created)
        run.refresh_from_db()
    return run


def this_month(hours: float = 0) -> dt.datetime:
    """An instant in the current local month (its 1st at midnight local, plus `hours`)."""
    return month_starts(timezone.now())[-2] + dt.timedelta(hours=hours)


@pytest.fixture
def team_runs(picture, owner, teammate) -> list[Run]:
    """ada and grace's runs, with Runflow's cost known, not arrived, and not billed."""
    start = this_month(1)
    last_month = month_starts(timezone.now())[-3] + dt.timedelta(days=3)
    long_ago = month_starts(timezone.now())[0] - dt.timedelta(days=40)
    return [
        make_run(picture, owner, S.SUCCEEDED, cost="0.005", created=start, duration_ms=1500),
        make_run(picture, owner, S.SUCCEEDED, cost=None, created=start, duration_ms=2500),  # est.
        make_run(picture, owner, S.FAILED, cost="0", created=start, duration_ms=400),
        make_run(picture, owner, S.FAILED, cost=None, created=start, duration_ms=600),  # free
        make_run(picture, owner, S.NOT_SUBMITTED, created=start),  # free
        make_run(picture, owner, S.CANCELED, created=start),  # free
        make_run(picture, owner, S.STALE, created=start),  # billed, not known: estimate
        make_run(
            picture, teammate, S.SUCCEEDED, cost="0.0042", created=last_month, duration_ms=900
        ),
        make_run(picture, teammate, S.RUNNING, created=last_month),  # estimate
        # Outside the last 12 months: all time only.
        make_run(picture, teammate, S.SUCCEEDED, cost="0.005", created=long_ago, duration_ms=1000),
    ]


def test_anonymous_visitors_are_sent_to_sign_in(client: Client) -> None:
    response = client.get("/usage/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/usage/"


def test_with_no_runs_it_says_nothing_was_spent(signed_in: Client) -> None:
    response = signed_in.get("/usage/")
    assert response.status_code == 200
    assert "No runs yet, so nothing spent." in response.content.decode()
    assert "<svg" not in response.content.decode()


def test_totals_add_runflow_costs_and_estimates_and_leave_out_unbilled_runs(
    signed_in: Client, team_runs: list[Run]
) -> None:
    response = signed_in.get("/usage/")
    assert response.status_code == 200
    year, all_time = response.context["year"], response.context["all_time"]

    # Last 12 months: known 0.005 + 0 + 0.0042; estimated: ada's succeeded-without-cost and
    # stale runs, teammate's running one; the failed, not-submitted and canceled runs are free.
    assert year["runs"] == 9
    assert year["succeeded"] == 3 and year["failed"] == 2
    assert year["estimated_runs"] == 3
    assert year["estimated"] == "$0.015"
    assert year["cost"] == "$0.0242"
    assert year["time"] == "5.9 s"
    assert all_time["runs"] == 10
    assert all_time["cost"] == "$0.0292"
    # The same sums as the run pages' own figures, one run at a time.
    shown = sum((r.cost_shown or Decimal(0) for r in team_runs), Decimal(0))
    assert shown == Decimal("0.0292")

    html = response.content.decode()
    # Both totals (the old run had its figure): the estimate is named in each.
    assert html.count("includes $0.015 estimated (3 runs)") == 2


def test_each_teammate_has_a_row_that_links_to_their_history(
    signed_in: Client, team_runs: list[Run], teammate
) -> None:
    since = timezone.localtime(month_starts(timezone.now())[0]).date().isoformat()
    rows = {row["username"]: row for row in signed_in.get("/usage/").context["teammates"]}
    assert set(rows) == {"ada", "grace"}
    ada, graces = rows["ada"], rows["grace"]
    assert (ada["runs"], ada["succeeded"], ada["failed"]) == (7, 2, 2)
    assert ada["cost"] == "$0.015" and ada["estimated"] == "$0.01"
    assert ada["time"] == "5.0 s"
    assert (graces["runs"], graces["cost"], graces["estimated"]) == (2, "$0.0092", "$0.005")
    assert ada["url"] == f"/runs/?owner=ada&since={since}"

    # All time: grace's old run counts, and the link is to all of her runs.
    response = signed_in.get("/usage/?period=all")
    rows = {row["username"]: row for row in response.context["teammates"]}
    assert (rows["grace"]["runs"], rows["grace"]["cost"]) == (3, "$0.0142")
    assert rows["grace"]["url"] == "/runs/?owner=grace"
    assert 'href="/runs/?owner=grace"' in response.content.decode()
    # The biggest spender first.
    assert [row["username"] for row in response.context["teammates"]] == ["ada", "grace"]


def test_runs_of_deleted_accounts_are_counted_without_a_link(
    signed_in: Client, picture, teammate
) -> None:
    make_run(picture, teammate, S.SUCCEEDED, cost="0.005", created=this_month(2))
    get_user_model().objects.filter(pk=teammate.pk).delete()  # the run stays, owner NULL
    rows = signed_in.get("/usage/").context["teammates"]
    assert [(r["username"], r["runs"], r["cost"], r["url"]) for r in rows] == [
        (None, 1, "$0.005", "")
    ]
    assert "Deleted accounts" in signed_in.get("/usage/").content.decode()


@pytest.mark.parametrize("zone", ["Pacific/Auckland", "America/Los_Angeles"])
def test_months_are_the_teams_local_months(
    signed_in: Client, settings, picture, owner, zone: str
) -> None:
    settings.TIME_ZONE = zone
    starts = month_starts(timezone.now())
    first = starts[-2]  # local midnight on the 1st of this month
    assert first.utcoffset() != dt.timedelta(0)
    # Half an hour after local midnight is still last month in UTC for Auckland; half an hour
    # before it is already this month in UTC for Los Angeles.
    make_run(picture, owner, S.SUCCEEDED, cost="0.005", created=first + dt.timedelta(minutes=30))
    make_run(picture, owner, S.SUCCEEDED, cost="0.005", created=first - dt.timedelta(minutes=30))
    make_run(picture, owner, S.SUCCEEDED, cost="0.005", created=first - dt.timedelta(minutes=31))

    months = signed_in.get("/usage/").context["months"]
    assert len(months) == 12
    assert months[-1]["label"] == f"{first:%B %Y}"
    assert (months[-1]["runs"], months[-1]["cost"]) == (1, "$0.005")
    assert (months[-2]["runs"], months[-2]["cost"]) == (2, "$0.01")
    assert sum(m["runs"] for m in months[:-2]) == 0


def test_the_chart_is_an_image_with_a_summary_and_the_same_figures_in_a_table(
    signed_in: Client, team_runs: list[Run]
) -> None:
    html = signed_in.get("/usage/").content.decode()
    svg = re.search(r"<svg[^>]*>", html)
    assert svg is not None
    assert 'role="img"' in svg.group(0)
    label = re.search(r'aria-label="([^"]*)"', svg.group(0))
    assert label is not None and "$0.0242 in all" in label.group(1)
    # One bar per month with Runflow's figure, one estimated part per month with estimates.
    assert html.count('class="bar"') == 2
    assert html.count('class="bar-est"') == 2
    month = f"{this_month():%B %Y}"
    assert re.search(rf"<th scope=\"row\">{month}</th>\s*<td class=\"num\">7</td>", html)


def test_a_period_it_does_not_know_is_refused_with_a_reason(signed_in: Client) -> None:
    response = signed_in.get("/usage/?period=decade")
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()


def test_it_is_added_up_by_the_database_in_a_fixed_number_of_queries(
    signed_in: Client, picture, owner, django_assert_max_num_queries
) -> None:
    for i in range(30):
        make_run(picture, owner, S.SUCCEEDED, cost="0.005", created=this_month(i))
    with django_assert_max_num_queries(4):  # session, user, one aggregate, the usernames
        response = signed_in.get("/usage/?period=all")
    assert response.context["all_time"]["runs"] == 30


# --- by API token --------------------------------------------------------------------------------


def test_spending_is_broken_down_per_api_token(
    signed_in: Client, picture, owner, teammate, django_assert_max_num_queries
) -> None:
    laptop, _ = ApiToken.issue(owner, "laptop")
    nightly, _ = ApiToken.issue(teammate, "nightly batch")
    ApiToken.objects.filter(pk=laptop.pk).update(revoked_at=timezone.now())
    start = this_month(1)
    long_ago = month_starts(timezone.now())[0] - dt.timedelta(days=40)
    for cost in ("0.005", "0.004"):  # in the browser
        make_run(picture, owner, S.SUCCEEDED, cost=cost, created=start)
    made = [make_run(picture, teammate, S.SUCCEEDED, cost="0.02", created=start) for _ in "ab"]
    made += [make_run(picture, owner, S.SUCCEEDED, cost="0.001", created=start)]
    made += [make_run(picture, teammate, S.SUCCEEDED, cost="1", created=long_ago)]
    Run.objects.filter(pk__in=[r.pk for r in made[:2]]).update(token=nightly)
    Run.objects.filter(pk=made[2].pk).update(token=laptop)
    Run.objects.filter(pk=made[3].pk).update(token=nightly)

    # The first view keeps the settled months (segmentation.usage); then the recent months'
    # aggregate, the kept months, and one small query for the tokens' names (and owners').
    signed_in.get("/usage/")
    with django_assert_max_num_queries(6):
        response = signed_in.get("/usage/")
    rows = response.context["tokens"]
    assert [(r["name"], r["owner"], r["runs"], r["cost"], r["revoked"]) for r in rows] == [
        ("nightly batch", "grace", 2, "$0.04", False),
        ("laptop", "ada", 1, "$0.001", True),
        ("", "", 2, "$0.009", False),  # the browser's
    ]
    html = response.content.decode()
    found = re.search(r'aria-labelledby="by-token">(.*?)</section>', html, re.S)
    assert found
    section = found[1]
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section))
    assert "By API token · Last 12 months" in page
    assert "API nightly batch grace 2" in page
    assert "API laptop revoked ada 1" in page
    assert "In the browser everyone 2" in page

    # All time: the old run counts for its token too.
    rows = signed_in.get("/usage/?period=all").context["tokens"]
    assert (rows[0]["name"], rows[0]["runs"], rows[0]["cost"]) == ("nightly batch", 3, "$1.04")


def test_without_api_runs_the_token_table_says_where_tokens_are_made(
    signed_in: Client, team_runs
) -> None:
    response = signed_in.get("/usage/")
    assert response.context["tokens"] == []
    html = response.content.decode()
    assert "No runs in the last 12 months came through the API." in re.sub(
        r"\s+", " ", re.sub(r"<[^>]+>", "", html)
    )
    assert 'href="/api/"' in html


def test_runs_made_by_batches_are_counted_and_said_to_be(
    signed_in: Client, team_runs: list[Run], owner
) -> None:
    batch = Batch.objects.create(owner=owner, concepts=["cat"], state=Batch.State.RUNNING)
    Run.objects.filter(pk__in=[team_runs[0].pk, team_runs[1].pk]).update(batch=batch)
    response = signed_in.get("/usage/")
    assert response.context["year"]["runs"] == 9
    assert response.context["year"]["batch_runs"] == 2
    assert "9 runs (2 in batches)" in response.content.decode()
