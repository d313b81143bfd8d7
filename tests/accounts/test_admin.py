"""Django's admin, for superusers: only what means something to a team is listed, and the
last active admin cannot be switched off there either."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db
User = get_user_model()


def test_the_admin_index_lists_the_teams_models_only(admin_client: Client) -> None:
    html = admin_client.get("/admin/").content.decode()
    for shown in (
        "/admin/segmentation/run/",
        "/admin/segmentation/sourceimage/",
        "/admin/auth/user/",
    ):
        assert shown in html, shown
    for hidden in (
        "django_tasks_db",
        "/admin/auth/group/",
        "sessions",
        "contenttypes",
        "setupcode",
    ):
        assert hidden not in html, hidden
    assert admin_client.get("/admin/django_tasks_db/dbtaskresult/").status_code == 404


def change_form_data(client: Client, user) -> dict:
    """The user's change form as the admin shows it, ready to post back."""
    form = client.get(f"/admin/auth/user/{user.pk}/change/").context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if value not in (None, False) and name not in ("password", "last_login", "date_joined")
    }
    data.update(
        {
            "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
            "groups": [],
            "user_permissions": [],
        }
    )
    return data


def test_the_last_active_admin_stays_one_in_the_admin_too(admin_client: Client, admin) -> None:
    data = change_form_data(admin_client, admin)
    data.pop("is_active")
    response = admin_client.post(f"/admin/auth/user/{admin.pk}/change/", data)
    assert response.status_code == 200
    assert "root is the team&#x27;s last active admin" in response.content.decode()
    admin.refresh_from_db()
    assert admin.is_active and admin.is_staff


def test_with_two_admins_one_can_be_disabled_in_the_admin(admin_client: Client, owner) -> None:
    owner.is_staff = True
    owner.save()
    data = change_form_data(admin_client, owner)
    data.pop("is_active")
    response = admin_client.post(f"/admin/auth/user/{owner.pk}/change/", data)
    assert response.status_code == 302
    owner.refresh_from_db()
    assert not owner.is_active


def test_an_admin_revokes_a_teammates_leaked_token(admin_client: Client, owner) -> None:
    from accounts.models import ApiToken

    row, raw = ApiToken.issue(owner, "laptop")
    listed = admin_client.get("/admin/accounts/apitoken/").content.decode()
    assert "laptop" in listed and row.hint in listed
    assert (
        row.digest
        not in admin_client.get(f"/admin/accounts/apitoken/{row.pk}/change/").content.decode()
    )
    assert admin_client.get("/admin/accounts/apitoken/add/").status_code == 403
    done = admin_client.post(
        "/admin/accounts/apitoken/",
        {"action": "revoke", "_selected_action": [row.pk]},
        follow=True,
    )
    assert "1 token(s) revoked" in done.content.decode()
    response = Client().get("/v1/runs", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 401


def test_run_changes_in_the_admin_do_not_list_every_token(admin_client: Client, owner) -> None:
    from tests.factories import make_run

    run = make_run(owner)
    page = admin_client.get(f"/admin/segmentation/run/{run.pk}/change/")
    assert page.status_code == 200
    assert 'name="token"' in page.content.decode()
