from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import URLPattern, path

from accounts import views

urlpatterns: list[URLPattern] = [
    path("accounts/login/", views.sign_in, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("setup/", views.first_admin, name="first_admin"),
    path("team/", views.team_list, name="team"),
    path("team/add/", views.team_add, name="team_add"),
    path("team/<int:user_id>/<slug:change>/", views.team_change, name="team_change"),
]
