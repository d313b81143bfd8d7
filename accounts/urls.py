from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import URLPattern, path

from accounts import api_views, views

urlpatterns: list[URLPattern] = [
    path("accounts/login/", views.sign_in, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("setup/", views.first_admin, name="first_admin"),
    path("team/", views.team_list, name="team"),
    path("team/add/", views.team_add, name="team_add"),
    # Before team_change: "budget" is not one of its changes.
    path("team/<int:user_id>/budget/", views.team_budget, name="team_budget"),
    path("team/<int:user_id>/<slug:change>/", views.team_change, name="team_change"),
    # The teammate's own API tokens and callback secret (the docs are the api app's).
    path("api/", api_views.api_page, name="api_tokens"),
    path("api/tokens/", api_views.token_create, name="api_token_create"),
    path("api/tokens/<int:token_id>/revoke/", api_views.token_revoke, name="api_token_revoke"),
    path("api/secret/rotate/", api_views.secret_rotate, name="api_secret_rotate"),
    path("api/secret/end-grace/", api_views.secret_end_grace, name="api_secret_end_grace"),
]
