"""Budgets as admins set them: the team page shows each teammate's monthly budget and what they
spent this month (and the team's, when the server sets one); an admin sets or lifts a budget
in dollars, refused beside the field when it is not an amount; ``manage.py set_budget`` does
the same from a shell."""

from __future__ import annotations

import datetime as dt
import io
import re
from decimal import Decimal
from html import unescape

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from accounts import budgets, team
from accounts.models import Profile
from segmentation import runs
from segmentation.models import Run
from segmentation.usage import month_starts
from tests.factories import make_run

pytestmark = pytest.mark.django_db
S = Run.Status


def row(html: str, username: str) -> str:
    """One teammate's row of the team table, as text."""
    found = re.search(
        rf"<tr id=\"teammate-\d+\"[^>]*>\s*<th scope=\"row\">\s*"
        rf"<span class=\"team-username\">{username}</span>(.*?)</tr>",
        html,
        re.S,
    )
    assert found, f"no row for {username}"
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", found[1])))


def text(response) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", response.content.decode())))


def field_errors(response, name: str) -> str:
    html = response.content.decode()
    block = re.search(rf'<div class="field has-error" id="field-{name}">(.*?)</div>', html, re.S)
    return unescape(re.sub(r"<[^>]+>|\s+", " ", block[1])).strip() if block else ""


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def budget_of(user) -> Decimal | None:
    return Profile.objects.filter(user=user).values_list("monthly_budget", flat=True).first()


def last_month():
    return month_starts(timezone.now())[-3] + dt.timedelta(days=2)


@pytest.fixture
def spending(owner, teammate) -> None:
    """ada: a budget of $25; this month a run at Runflow's cost ($0.42), one still at the list
    price ($0.005), a failed one (free), a deleted one ($0.10, still counted), and a big one
    last month (not counted). grace: no budget, one run ($0.005)."""
    team.set_budget(owner, Decimal("25"))
    make_run(owner, cost=Decimal("0.42"))
    make_run(owner)
    make_run(owner, status=S.FAILED)
    gone = make_run(owner, cost=Decimal("0.10"))
    runs.delete_run(gone.pk)
    old = make_run(owner, cost=Decimal("9"))
    Run.objects.filter(pk=old.pk).update(created_at=last_month())
    make_run(teammate)


# --- the team page -------------------------------------------------------------------------------


def test_the_team_page_shows_each_budget_and_this_months_spending(
    admin_client: Client, spending, owner
) -> None:
    html = admin_client.get("/team/").content.decode()
    month = f"{timezone.localtime():%B}"
    assert f"Spent in {month}" in html
    ada = row(html, "ada")
    assert "$25.00" in ada and "$0.525" in ada and "Change ada’s budget" in ada
    grace = row(html, "grace")
    assert "No limit" in grace and "$0.005" in grace and "Set grace’s budget" in grace
    assert "$0.00" in row(html, "root")
    assert f'href="/team/{owner.pk}/budget/"' in html
    # As budgets count them (the one rule): the deleted run's cost included.
    assert budgets.spent(owner) == Decimal("0.525")


def test_the_teams_spending_is_worked_out_in_a_fixed_number_of_queries(
    admin_client: Client,
    spending,
    owner,
    teammate,
    django_user_model,
    django_assert_max_num_queries,
) -> None:
    for i in range(10):
        person = django_user_model.objects.create_user(f"extra{i}")
        make_run(person)
    # session, user (twice: the admin check), people, runs' and deleted runs' sums, budgets,
    # admins count.
    with django_assert_max_num_queries(9):
        response = admin_client.get("/team/")
    assert response.status_code == 200
    # The grouped sums agree with budgets.spent for everyone.
    found = budgets.spent_by_owner(budgets.month_start())
    for person in django_user_model.objects.all():
        assert found.get(person.pk, Decimal(0)) == budgets.spent(person), person


def test_a_spent_budget_is_marked(admin_client: Client, owner) -> None:
    team.set_budget(owner, Decimal("0.01"))
    make_run(owner, cost=Decimal("0.01"))
    ada = row(admin_client.get("/team/").content.decode(), "ada")
    assert "budget spent" in ada


def test_without_a_team_budget_the_page_says_so(admin_client: Client, spending) -> None:
    page = text(admin_client.get("/team/"))
    month = f"{timezone.localtime():%B}"
    assert f"$0.53 spent by the team in {month}. There is no team-wide budget" in page
    assert "SAM3WEB_TEAM_MONTHLY_BUDGET" in page


def test_the_team_budget_is_shown_with_what_is_left(
    admin_client: Client, spending, settings
) -> None:
    settings.SAM3WEB_TEAM_MONTHLY_BUDGET = Decimal("2.00")
    page = text(admin_client.get("/team/"))
    month = f"{timezone.localtime():%B}"
    assert f"Team budget: $0.53 of $2.00 spent in {month} ($1.47 left)." in page
    settings.SAM3WEB_TEAM_MONTHLY_BUDGET = Decimal("0.50")
    page = text(admin_client.get("/team/"))
    assert f"Team budget: $0.53 of $0.50 spent in {month}, all of it" in page


def test_teammates_cannot_see_or_set_budgets(teammate_client: Client, owner) -> None:
    assert teammate_client.get("/team/").status_code == 403
    assert teammate_client.get(f"/team/{owner.pk}/budget/").status_code == 403
    assert teammate_client.post(f"/team/{owner.pk}/budget/", {"amount": ""}).status_code == 403
    assert budget_of(owner) is None


# --- setting a budget ----------------------------------------------------------------------------


def test_an_admin_sets_a_budget_and_lifts_it(admin_client: Client, owner) -> None:
    form = admin_client.get(f"/team/{owner.pk}/budget/")
    assert form.status_code == 200
    assert "ada’s monthly budget" in text(form) and "No limit now; $0.00 spent in" in text(form)

    response = admin_client.post(f"/team/{owner.pk}/budget/", {"amount": "12.50"}, follow=True)
    assert response.redirect_chain == [(f"/team/#teammate-{owner.pk}", 302)]
    assert messages_of(response) == ["ada’s monthly budget is now $12.50."]
    assert budget_of(owner) == Decimal("12.50")
    assert "$12.50" in row(response.content.decode(), "ada")
    # The form starts from it next time.
    again = admin_client.get(f"/team/{owner.pk}/budget/")
    assert 'value="12.50"' in again.content.decode() and "$12.50 a month now" in text(again)
    # And it is what the run form and the API check.
    assert budgets.standing(owner).budget == Decimal("12.50")

    response = admin_client.post(f"/team/{owner.pk}/budget/", {"amount": ""}, follow=True)
    assert messages_of(response) == ["ada has no monthly budget now: their runs are not limited."]
    assert budget_of(owner) is None
    assert budgets.standing(owner).text == ""


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("25", "25.00"), ("$8", "8.00"), (" 0.5 ", "0.50"), ("0", "0.00"), ("none", None)],
)
def test_amounts_as_people_type_them(admin_client: Client, owner, typed, stored) -> None:
    assert admin_client.post(f"/team/{owner.pk}/budget/", {"amount": typed}).status_code == 302
    assert budget_of(owner) == (None if stored is None else Decimal(stored))


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("-5", "A budget cannot be negative"),
        ("12.345", "Dollars and cents only: at most 2 digits after the point."),
        ("1,000", "Write the amount without commas, like 1000 or 12.50."),
        ("ten", "“ten” is not an amount of dollars"),
        ("NaN", "“NaN” is not an amount of dollars"),
        ("Infinity", "“Infinity” is not an amount of dollars"),
        ("123456789", "At most $99,999,999.99."),
    ],
)
def test_a_bad_amount_is_refused_beside_the_field(admin_client: Client, owner, typed, error):
    team.set_budget(owner, Decimal("3"))
    response = admin_client.post(f"/team/{owner.pk}/budget/", {"amount": typed})
    assert response.status_code == 400
    assert error in field_errors(response, "amount")
    assert "The budget was not changed." in text(response)
    assert f'value="{typed}"' in response.content.decode()  # what was typed stays
    assert budget_of(owner) == Decimal("3.00")


def test_an_unknown_teammate_is_404(admin_client: Client) -> None:
    assert admin_client.get("/team/999999/budget/").status_code == 404


# --- manage.py set_budget ------------------------------------------------------------------------


def set_budget(*args: str) -> str:
    out = io.StringIO()
    call_command("set_budget", *args, stdout=out)
    return out.getvalue()


def test_the_command_sets_and_lifts_a_budget(owner) -> None:
    make_run(owner, cost=Decimal("0.42"))
    assert set_budget("ada", "25") == (
        "ada’s monthly budget is now $25.00.\nSpent this month: $0.42.\n"
    )
    assert budget_of(owner) == Decimal("25.00")
    set_budget("ada", "12.50")
    assert budget_of(owner) == Decimal("12.50")
    set_budget("ADA", "$8")  # the username in any case
    assert budget_of(owner) == Decimal("8.00")
    assert set_budget("ada", "none").startswith("ada has no monthly budget now")
    assert budget_of(owner) is None


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("nobody", "25"), "There is no teammate named 'nobody'."),
        (("ada", "-1"), "'-1': A budget cannot be negative"),
        (("ada", "lots"), "'lots': “lots” is not an amount of dollars"),
        (("ada", "1.005"), "'1.005': Dollars and cents only"),
    ],
)
def test_the_command_says_what_is_wrong(owner, args, error) -> None:
    with pytest.raises(CommandError, match=re.escape(error)):
        set_budget(*args)
    assert budget_of(owner) is None


def test_the_command_needs_both_arguments(owner) -> None:
    with pytest.raises(CommandError, match="the following arguments are required: dollars"):
        set_budget("ada")
