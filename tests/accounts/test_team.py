"""The team page (/team/): admins see everyone, add teammates, disable and re-enable them,
make and unmake admins; the rules that keep a team from locking itself out; teammates get a
403 page and strangers the sign-in page."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from accounts import team
from segmentation.models import Run
from tests.factories import make_run

pytestmark = pytest.mark.django_db
User = get_user_model()

NEW = {
    "username": "linus",
    "first_name": "Linus",
    "last_name": "Pauling",
    "email": "linus@example.com",
    "password1": "a fine long password",
    "password2": "a fine long password",
}


def row(html: str, username: str) -> str:
    """One teammate's row of the table, as text."""
    found = re.search(
        rf"<tr id=\"teammate-\d+\"[^>]*>\s*<th scope=\"row\">\s*"
        rf"<span class=\"team-username\">{username}</span>(.*?)</tr>",
        html,
        re.S,
    )
    assert found, f"no row for {username}"
    return re.sub(r"<[^>]+>|\s+", " ", found[1])


def field_errors(response, name: str) -> str:
    html = response.content.decode()
    block = re.search(rf'<div class="field has-error" id="field-{name}">(.*?)</div>', html, re.S)
    return re.sub(r"<[^>]+>|\s+", " ", block[1]) if block else ""


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- who may see it ------------------------------------------------------------------------------


def test_strangers_are_sent_to_sign_in(stranger: Client, owner) -> None:
    for path in ("/team/", "/team/add/", f"/team/{owner.pk}/disable/"):
        response = stranger.get(path)
        assert response.status_code == 302 and response["Location"].startswith(
            "/accounts/login/?next=/team/"
        ), path


def test_teammates_get_a_403_page_and_change_nothing(teammate_client: Client, owner, admin) -> None:
    response = teammate_client.get("/team/")
    assert response.status_code == 403
    html = response.content.decode()
    assert "Only admins can manage the team" in html and "<strong>root</strong>" in html
    assert 'class="topbar"' in html  # the app's own page, not a bare error
    assert teammate_client.get("/team/add/").status_code == 403
    assert teammate_client.post("/team/add/", NEW).status_code == 403
    for change in ("disable", "demote", "promote"):
        assert teammate_client.post(f"/team/{owner.pk}/{change}/").status_code == 403
    assert teammate_client.post(f"/team/{admin.pk}/demote/").status_code == 403
    owner.refresh_from_db()
    admin.refresh_from_db()
    assert owner.is_active and not owner.is_staff and admin.is_staff
    assert not User.objects.filter(username="linus").exists()


def test_the_nav_links_team_for_admins_and_admin_for_superusers(
    signed_in: Client, admin_client: Client, owner
) -> None:
    assert 'href="/team/"' not in signed_in.get("/runs/").content.decode()
    html = admin_client.get("/runs/").content.decode()
    assert 'href="/team/"' in html and 'href="/admin/"' in html
    assert 'href="/team/" aria-current="page"' in admin_client.get("/team/").content.decode()
    # An admin who is not a superuser (made so elsewhere) manages the team, without Django's admin.
    owner.is_staff = True
    owner.save()
    html = signed_in.get("/runs/").content.decode()
    assert 'href="/team/"' in html and 'href="/admin/"' not in html
    assert signed_in.get("/team/").status_code == 200


# --- the list ------------------------------------------------------------------------------------


def test_the_team_page_lists_everyone(admin_client: Client, admin, owner, teammate, disabled):
    owner.first_name, owner.last_name, owner.email = "Ada", "Lovelace", "ada@example.com"
    owner.last_login = timezone.now()
    owner.save()
    disabled.is_active = False
    disabled.save()
    for _ in range(3):
        make_run(owner)
    make_run(teammate)
    html = admin_client.get("/team/").content.decode()
    ada = row(html, "ada")
    assert "Ada Lovelace" in ada and "ada@example.com" in ada
    assert "Teammate" in ada and "Active" in ada and "now" in ada
    assert '<a href="/runs/?owner=ada" title="Their runs in the history">3</a>' in html
    grace = row(html, "grace")
    assert "Never" in grace and " 1 " in grace
    mallory = row(html, "mallory")
    assert "Disabled" in mallory and "Re-enable" in mallory and " 0 " in mallory
    root = row(html, "root")
    assert "Admin" in root and "you" in root and "Another admin can change your account" in root
    assert "Disable" not in root  # no buttons for one's own row
    assert "4 in all, 1 active admin" in html


# --- adding --------------------------------------------------------------------------------------


def test_an_admin_adds_a_teammate_who_can_sign_in_at_once(admin_client: Client) -> None:
    form = admin_client.get("/team/add/")
    assert form.status_code == 200
    response = admin_client.post("/team/add/", NEW, follow=True)
    assert response.redirect_chain == [("/team/", 302)]
    assert messages_of(response) == [
        "linus is on the team. They can sign in now with the password you set: pass it on to "
        "them privately."
    ]
    linus = User.objects.get(username="linus")
    assert (linus.get_full_name(), linus.email) == ("Linus Pauling", "linus@example.com")
    assert linus.is_active and not linus.is_staff and not linus.is_superuser
    assert Client().login(username="linus", password="a fine long password")


def test_the_name_and_email_are_optional(admin_client: Client) -> None:
    data = {**NEW, "first_name": "", "last_name": "", "email": ""}
    assert admin_client.post("/team/add/", data).status_code == 302
    assert User.objects.get(username="linus").email == ""


@pytest.mark.parametrize(
    ("change", "field", "error"),
    [
        ({"username": "ADA"}, "username", "A user with that username already exists."),
        ({"username": ""}, "username", "This field is required."),
        ({"username": "linus pauling"}, "username", "Enter a valid username."),
        ({"email": "linus@"}, "email", "Enter a valid email address."),
        ({"password1": "short1", "password2": "short1"}, "password1", "too short"),
        ({"password1": "12345678901", "password2": "12345678901"}, "password1", "entirely numeric"),
        ({"password1": "password123", "password2": "password123"}, "password1", "too common"),
        ({"password1": "linuspauling", "password2": "linuspauling"}, "password1", "too similar"),
        ({"password2": "another fine long password"}, "password2", "didn’t match"),
    ],
)
def test_bad_input_is_refused_beside_the_field_and_nobody_is_added(
    admin_client: Client, owner, change, field, error
) -> None:
    before = User.objects.count()
    response = admin_client.post("/team/add/", {**NEW, **change})
    assert response.status_code == 400
    assert error in field_errors(response, field), response.content.decode()[:4000]
    assert "Nobody was added." in response.content.decode()
    assert User.objects.count() == before


# --- disabling, enabling, promoting, demoting ----------------------------------------------------


def test_disabling_asks_first_then_ends_sign_in_and_keeps_the_runs(
    admin_client: Client, teammate, teammate_client: Client
) -> None:
    run = make_run(teammate)
    confirm = admin_client.get(f"/team/{teammate.pk}/disable/")
    assert confirm.status_code == 200
    assert "Disable grace?" in confirm.content.decode()
    teammate.refresh_from_db()
    assert teammate.is_active  # asking changed nothing

    response = admin_client.post(f"/team/{teammate.pk}/disable/", follow=True)
    assert response.redirect_chain == [("/team/", 302)]
    assert messages_of(response) == [
        "grace is disabled: they cannot sign in, any session they have open ends, and their "
        "API tokens stop working. Their runs stay."
    ]
    teammate.refresh_from_db()
    assert not teammate.is_active
    assert Run.objects.get(pk=run.pk).owner_id == teammate.pk
    assert teammate_client.get("/runs/").status_code == 302  # the open session ended
    assert not Client().login(username="grace", password="another long pass")

    response = admin_client.post(f"/team/{teammate.pk}/enable/", follow=True)
    assert messages_of(response) == ["grace can sign in again."]
    assert Client().login(username="grace", password="another long pass")


def test_making_and_unmaking_an_admin(admin_client: Client, owner, signed_in: Client) -> None:
    response = admin_client.post(f"/team/{owner.pk}/promote/", follow=True)
    assert messages_of(response) == ["ada is now an admin: they can manage the team."]
    owner.refresh_from_db()
    assert owner.is_staff and owner.is_superuser
    assert signed_in.get("/team/").status_code == 200

    assert (
        "Remove ada’s admin role?" in admin_client.get(f"/team/{owner.pk}/demote/").content.decode()
    )
    response = admin_client.post(f"/team/{owner.pk}/demote/", follow=True)
    assert messages_of(response) == ["ada is no longer an admin."]
    owner.refresh_from_db()
    assert not owner.is_staff and not owner.is_superuser
    assert signed_in.get("/team/").status_code == 403


def test_repeating_a_change_says_so(admin_client: Client, owner) -> None:
    admin_client.post(f"/team/{owner.pk}/disable/", follow=True)
    response = admin_client.post(f"/team/{owner.pk}/disable/", follow=True)
    assert messages_of(response) == ["ada was already disabled."]


def test_changes_need_a_post_with_the_csrf_token(admin, owner, admin_client: Client) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin)
    assert browser.post(f"/team/{owner.pk}/disable/").status_code == 403
    assert browser.post("/team/add/", NEW).status_code == 403
    browser.get(f"/team/{owner.pk}/disable/")  # GET asks, and does nothing
    owner.refresh_from_db()
    assert owner.is_active
    assert not User.objects.filter(username="linus").exists()
    assert admin_client.put(f"/team/{owner.pk}/disable/").status_code == 405
    assert admin_client.post("/team/").status_code == 405


def test_unknown_people_and_changes_are_404(admin_client: Client, owner) -> None:
    assert admin_client.post("/team/999999/disable/").status_code == 404
    assert admin_client.post(f"/team/{owner.pk}/delete/").status_code == 404
    assert admin_client.get(f"/team/{owner.pk}/explode/").status_code == 404


# --- the rules -----------------------------------------------------------------------------------


def test_the_last_active_admin_can_be_neither_disabled_nor_demoted(
    admin_client: Client, admin, disabled
) -> None:
    # A disabled admin does not count: root is still the last active one.
    disabled.is_staff = True
    disabled.is_active = False
    disabled.save()
    for change, verb in (("disable", "disabled"), ("demote", "demoted")):
        confirm = admin_client.get(f"/team/{admin.pk}/{change}/")
        message = (
            f"root is the team's last active admin and cannot be {verb}. "
            "Make someone else an admin first."
        )
        assert confirm.status_code == 409
        assert message.replace("'", "&#x27;") in confirm.content.decode()
        assert f'class="button danger">{change.title()}' not in confirm.content.decode()
        response = admin_client.post(f"/team/{admin.pk}/{change}/", follow=True)
        assert messages_of(response) == [message]
    admin.refresh_from_db()
    assert admin.is_active and admin.is_staff and admin.is_superuser


def test_an_admin_cannot_disable_or_demote_themselves(admin_client: Client, admin, owner) -> None:
    owner.is_staff = True  # a second admin, so the last-admin rule is not what refuses
    owner.save()
    response = admin_client.post(f"/team/{admin.pk}/disable/", follow=True)
    assert messages_of(response) == [
        "You cannot disable your own account. Ask another admin to do it."
    ]
    response = admin_client.post(f"/team/{admin.pk}/demote/", follow=True)
    assert messages_of(response) == [
        "You cannot remove your own admin role. Ask another admin to do it."
    ]
    admin.refresh_from_db()
    assert admin.is_active and admin.is_staff
    # ... but another admin can.
    signed = Client()
    signed.force_login(owner)
    assert signed.post(f"/team/{admin.pk}/demote/").status_code == 302
    admin.refresh_from_db()
    assert not admin.is_staff


def test_two_admins_demoting_each_other_leave_one_admin(admin, owner) -> None:
    """Each request checks the rules against the database, not the user it started with: the
    second demotion finds its admin already demoted and is refused."""
    owner.is_staff = True
    owner.save()
    root_as_request_saw_them = User.objects.get(pk=admin.pk)
    ada_as_request_saw_them = User.objects.get(pk=owner.pk)
    team.apply(root_as_request_saw_them, owner.pk, "demote")
    with pytest.raises(team.TeamRuleError, match="Only an admin can change the team."):
        team.apply(ada_as_request_saw_them, admin.pk, "demote")
    assert list(User.objects.filter(is_staff=True).values_list("username", flat=True)) == ["root"]
