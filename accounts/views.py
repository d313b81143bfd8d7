"""Signing in, the first admin account of a fresh install, and the team page where admins
add, disable and promote teammates and set their monthly budgets."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count
from django.db.models.functions import Lower
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from accounts import budgets, setup, team
from accounts.forms import BudgetForm, FirstAdminForm, TeammateForm
from accounts.models import Profile
from segmentation.usage import money

View = Callable[..., HttpResponse]


@login_not_required
def sign_in(request: HttpRequest) -> HttpResponseBase:
    # A fresh install has nobody to sign in as: send the first visitor to create the admin.
    if setup.needs_setup():
        return redirect("first_admin")
    return auth_views.LoginView.as_view()(request)


@login_not_required
@require_http_methods(["GET", "POST"])
def first_admin(request: HttpRequest) -> HttpResponse:
    """On a fresh install with no users, whoever has the setup code creates the first admin."""
    if not setup.needs_setup():
        return redirect("login")
    # Made now if bin/serve has not made it yet, so the page and setup_code agree.
    setup.current_code()
    form = FirstAdminForm(request.POST or None)
    if request.method == "POST":
        valid = form.is_valid()
        typed = form.cleaned_data.get("setup_code", "")
        if typed:
            # The code is checked even when other fields have errors, so each try counts.
            try:
                user = setup.attempt(typed, (lambda: _save_admin(form)) if valid else None)
            except setup.SetupClosed:
                return redirect("login")
            except setup.SetupRefused as refused:
                form.add_error("setup_code", str(refused))
            else:
                if user is not None:
                    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                    messages.success(
                        request, f"Welcome, {user.get_username()}. You are this team's admin."
                    )
                    return redirect("run_new")
    return render(request, "registration/first_admin.html", {"form": form})


def _save_admin(form: FirstAdminForm) -> Any:
    user = form.save(commit=False)
    user.is_staff = user.is_superuser = True
    user.save()
    return user


def admins_only(view: View) -> View:
    """The team pages: signed-in admins only. Anyone else signed in gets a 403 page that says
    who can help (someone not signed in never gets here: the login middleware sends them to
    sign in first)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not team.is_admin(request.user):
            admins = (
                get_user_model()
                .objects.filter(is_active=True, is_staff=True)
                .order_by(Lower("username"))
            )
            return render(request, "accounts/admins_only.html", {"admins": admins}, status=403)
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@admins_only
def team_list(request: HttpRequest) -> HttpResponse:
    """Everyone with an account, admins and disabled accounts included, with their runs, their
    monthly budget and what they spent this month."""
    people = list(
        get_user_model().objects.annotate(run_count=Count("runs")).order_by(Lower("username"), "pk")
    )
    since = budgets.month_start()
    spent = budgets.spent_by_owner(since)
    limits = dict(Profile.objects.values_list("user_id", "monthly_budget"))
    rows = []
    for person in people:
        budget, used = limits.get(person.pk), spent.get(person.pk, Decimal(0))
        rows.append(
            {
                "person": person,
                "budget": money(budget) if budget is not None else "",
                "spent": money(used),
                "spent_any": used > 0,
                "over": budget is not None and used >= budget,
            }
        )
    team_budget = settings.SAM3WEB_TEAM_MONTHLY_BUDGET
    # Deleted accounts' runs count against the team's budget too (budgets.spent()).
    team_spent = sum(spent.values(), start=Decimal(0))
    return render(
        request,
        "accounts/team.html",
        {
            "people": people,
            "rows": rows,
            "changes": team.CHANGES,
            "active_admins": team.active_admin_count(),
            "month": since,
            "team_budget": money(team_budget) if team_budget is not None else "",
            "team_spent": money(team_spent),
            "team_left": (
                money(max(team_budget - team_spent, Decimal(0))) if team_budget is not None else ""
            ),
            "team_over": team_budget is not None and team_spent >= team_budget,
        },
    )


@require_http_methods(["GET", "POST"])
@admins_only
def team_budget(request: HttpRequest, user_id: int) -> HttpResponse:
    """Set or lift one teammate's monthly budget."""
    person = get_object_or_404(get_user_model(), pk=user_id)
    current = Profile.objects.filter(user=person).values_list("monthly_budget", flat=True).first()
    form = BudgetForm(
        request.POST or None, initial={"amount": "" if current is None else f"{current:f}"}
    )
    if request.method == "POST" and form.is_valid():
        messages.success(request, team.set_budget(person, form.cleaned_data["amount"]))
        return redirect(f"{reverse('team')}#teammate-{person.pk}")
    return render(
        request,
        "accounts/team_budget.html",
        {
            "person": person,
            "form": form,
            "current": money(current) if current is not None else "",
            "spent": money(budgets.spent(person)),
            "month": budgets.month_start(),
            "price": money(settings.SAM3WEB_PRICE_PER_IMAGE),
        },
        status=400 if form.errors else 200,
    )


@require_http_methods(["GET", "POST"])
@admins_only
def team_add(request: HttpRequest) -> HttpResponse:
    form = TeammateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        messages.success(
            request,
            f"{user.get_username()} is on the team. They can sign in now with the password "
            "you set: pass it on to them privately.",
        )
        return redirect("team")
    status = 400 if form.errors else 200
    return render(request, "accounts/team_add.html", {"form": form}, status=status)


@require_http_methods(["GET", "POST"])
@admins_only
def team_change(request: HttpRequest, user_id: int, change: str) -> HttpResponse:
    """Disable, re-enable, promote or demote one account. POST does it; GET shows what it will
    do and asks to confirm (the table links here for the changes that take something away)."""
    if change not in team.CHANGES:
        raise Http404("No such change.")
    person = get_object_or_404(get_user_model(), pk=user_id)
    if request.method == "POST":
        try:
            outcome = team.apply(request.user, person.pk, change)
        except team.TeamRuleError as refused:
            messages.error(request, str(refused))
        else:
            (messages.success if outcome.changed else messages.info)(request, outcome.message)
        return redirect("team")
    why = team.refusal(request.user, person, change, team.active_admin_count())
    return render(
        request,
        "accounts/team_confirm.html",
        {"person": person, "change": team.CHANGES[change], "refused": why},
        status=409 if why else 200,
    )
