"""Signing in, and the first admin account of a fresh install."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods


@login_not_required
def sign_in(request: HttpRequest) -> HttpResponseBase:
    # A fresh install has nobody to sign in as: send the first visitor to create the admin.
    if not get_user_model().objects.exists():
        return redirect("first_admin")
    return auth_views.LoginView.as_view()(request)


@login_not_required
@require_http_methods(["GET", "POST"])
def first_admin(request: HttpRequest) -> HttpResponse:
    """On a fresh install with no users, offer to create the first admin account."""
    User = get_user_model()
    if User.objects.exists():
        return redirect("login")
    form: UserCreationForm[Any] = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            # Two people racing through setup: only the first one becomes the admin.
            if User.objects.select_for_update().exists():
                return redirect("login")
            user = form.save(commit=False)
            user.is_staff = user.is_superuser = True
            user.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_username()}. You are this team's admin.")
        return redirect("run_new")
    return render(request, "registration/first_admin.html", {"form": form})
