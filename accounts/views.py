"""Signing in, and the first admin account of a fresh install."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts import setup
from accounts.forms import FirstAdminForm


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
