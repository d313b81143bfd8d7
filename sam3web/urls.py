from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import include, path


@login_not_required
def sign_in(request: HttpRequest) -> HttpResponse:
    # A fresh install has nobody to sign in as: send the first visitor to create the admin.
    if not get_user_model().objects.exists():
        return redirect("first_admin")
    return auth_views.LoginView.as_view()(request)


admin.site.site_header = "sam3web administration"
admin.site.site_title = "sam3web"

urlpatterns = [
    path("accounts/login/", sign_in, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("segmentation.urls")),
]
