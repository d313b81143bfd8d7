"""The pages that start runs say what budget is left, and when a run does not fit (the
teammate's monthly budget, or the team's, is spent) they say why and make nothing: the run
form and the "Submit again" buttons refuse with a message, and "same prompts on other images"
starts the runs that fit and says the rest did not."""

from __future__ import annotations

import re
from decimal import Decimal
from html import unescape

import pytest
from django.test import Client

from accounts import budgets, team
from segmentation.models import Run
from tests.factories import form_data, make_run, upload

pytestmark = pytest.mark.django_db
S = Run.Status


def text(response) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", response.content.decode())))


def banner(response) -> str:
    """The form's own errors, shown above it."""
    block = re.search(
        r'<div class="errors banner" role="alert">(.*?)</div>', response.content.decode(), re.S
    )
    assert block, "no error banner on the page"
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", block[1]))).strip()


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def one_dollar(owner) -> None:
    """ada may spend $1.00 a month and has spent $0.25 (a run at Runflow's cost)."""
    team.set_budget(owner, Decimal("1"))
    make_run(owner, cost=Decimal("0.25"))


@pytest.fixture
def spent(owner) -> None:
    """ada's $0.25 budget is all spent."""
    team.set_budget(owner, Decimal("0.25"))
    make_run(owner, cost=Decimal("0.25"))


REFUSAL = (
    "Your monthly budget of $0.25 is spent ($0.25 so far this month; a run costs $0.005). "
    "An admin can raise it on the Team page."
)


# --- the new-run form ----------------------------------------------------------------------------


def test_the_run_form_says_what_is_left(signed_in: Client, one_dollar) -> None:
    page = signed_in.get("/runs/new/")
    assert "$0.75 of your $1.00 monthly budget left (about 150 runs)." in text(page)
    assert 'aria-describedby="budget-left"' in page.content.decode()


def test_without_a_budget_the_form_says_nothing_of_it(signed_in: Client) -> None:
    html = signed_in.get("/runs/new/").content.decode()
    assert "budget" not in html.lower()


def test_a_run_past_the_budget_is_refused_and_nothing_is_made(
    signed_in: Client, owner, spent
) -> None:
    page = signed_in.get("/runs/new/")
    assert REFUSAL in text(page)  # said before anything is chosen
    assert "$0.00 of your $0.25 monthly budget left (about 0 runs)." in text(page)

    before = Run.objects.count()
    response = signed_in.post("/runs/new/", form_data())
    assert response.status_code == 400
    assert banner(response) == REFUSAL
    assert Run.objects.count() == before
    # The image chosen is kept on the form for when there is budget again.
    assert 'name="staged_image"' in response.content.decode()

    team.set_budget(owner, Decimal("1"))  # an admin raises it
    staged = re.search(r'name="staged_image" value="([^"]+)"', response.content.decode())
    assert staged
    again = signed_in.post("/runs/new/", form_data(image=None, staged_image=staged[1]))
    assert again.status_code == 302
    assert Run.objects.count() == before + 1


def test_the_teams_budget_is_checked_too(signed_in: Client, teammate, settings) -> None:
    settings.SAM3WEB_TEAM_MONTHLY_BUDGET = Decimal("0.50")
    make_run(teammate, cost=Decimal("0.50"))
    response = signed_in.post("/runs/new/", form_data())
    assert response.status_code == 400
    assert banner(response) == (
        "The team's monthly budget of $0.50 is spent ($0.50 so far this month)."
    )
    assert not Run.objects.filter(owner__username="ada").exists()
    assert 'name="staged_image"' in response.content.decode()  # the image, kept for later


# --- same prompts on other images ----------------------------------------------------------------


@pytest.fixture
def source(owner) -> Run:
    """A free run of ada's to start others from (its cost known: nothing)."""
    return make_run(owner, cost=Decimal("0"))


def reuse(client: Client, source: Run, *names: str):
    return client.post(f"/runs/{source.pk}/reuse/", {"images": [upload(n) for n in names]})


def test_the_reuse_page_says_what_is_left(signed_in: Client, source, one_dollar) -> None:
    page = signed_in.get(f"/runs/{source.pk}/reuse/")
    assert "$0.75 of your $1.00 monthly budget left (about 150 runs)." in text(page)


def test_the_runs_that_fit_start_and_the_page_says_the_rest_did_not(
    signed_in: Client, owner, source, django_capture_on_commit_callbacks
) -> None:
    team.set_budget(owner, Decimal("0.01"))  # two runs at $0.005
    with django_capture_on_commit_callbacks(execute=True):
        response = reuse(signed_in, source, "coffee.jpg", "astronaut.jpg", "coins.png")
    assert response.status_code == 302
    started = list(Run.objects.filter(parent=source).order_by("created_at"))
    assert [r.image.original_name for r in started] == ["coffee.jpg", "astronaut.jpg"]
    assert all(r.status == S.PENDING and r.task_id for r in started)
    page = signed_in.get(response["Location"])
    assert messages_of(page) == [
        "Started 2 of 3 runs; the other 1 was not started, because the budget is spent. "
        "Your monthly budget of $0.01 is spent ($0.01 so far this month; a run costs "
        "$0.005). An admin can raise it on the Team page."
    ]
    assert "Started 2 runs" in text(page)
    assert budgets.spent(owner) == Decimal("0.01")


def test_when_none_fits_nothing_starts(signed_in: Client, owner, source, spent) -> None:
    response = reuse(signed_in, source, "coffee.jpg", "astronaut.jpg")
    assert response.status_code == 400
    assert banner(response) == f"Nothing was started. {REFUSAL}"
    assert not Run.objects.filter(parent=source).exists()
    # The images are kept, ticked, for later.
    assert len(re.findall(r'name="kept"', response.content.decode())) == 2


# --- Submit again --------------------------------------------------------------------------------


def test_submitting_again_past_the_budget_says_why(signed_in: Client, owner, spent) -> None:
    run = make_run(owner, status=S.NOT_SUBMITTED)
    response = signed_in.post(f"/runs/{run.pk}/resubmit/", follow=True)
    assert response.redirect_chain == [(f"/runs/{run.pk}/", 302)]
    assert messages_of(response) == [f"Not submitted again. {REFUSAL}"]
    run.refresh_from_db()
    assert run.status == S.NOT_SUBMITTED and not run.task_id


def test_a_stale_run_is_not_sent_as_new_past_the_budget(signed_in: Client, owner, spent) -> None:
    # Runflow no longer knows it; it cost nothing (so the budget is as `spent` left it).
    run = make_run(owner, status=S.STALE, error_code="RUN_NOT_FOUND", cost=Decimal("0"))
    response = signed_in.post(f"/runs/{run.pk}/resubmit/", follow=True)
    assert response.redirect_chain == [(f"/runs/{run.pk}/", 302)]
    assert messages_of(response) == [f"Not submitted again. {REFUSAL}"]
    assert not Run.objects.filter(parent=run).exists()


def test_an_admin_is_told_whose_budget_is_spent(admin_client: Client, owner, spent) -> None:
    run = make_run(owner, status=S.NOT_SUBMITTED)
    response = admin_client.post(f"/runs/{run.pk}/resubmit/", follow=True)
    assert messages_of(response) == [
        "Not submitted again: it is charged to ada, and ada’s monthly budget (or the team’s) "
        "is spent."
    ]
    run.refresh_from_db()
    assert run.status == S.NOT_SUBMITTED


def test_within_the_budget_it_is_submitted_again(signed_in: Client, owner, one_dollar) -> None:
    run = make_run(owner, status=S.NOT_SUBMITTED)
    response = signed_in.post(f"/runs/{run.pk}/resubmit/", follow=True)
    assert messages_of(response) == ["Submitting the run again."]
    run.refresh_from_db()
    assert run.status == S.PENDING
