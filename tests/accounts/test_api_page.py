"""The API page (/api/): a teammate makes named tokens (each shown once, only its hash kept),
sees and revokes them, sees and rotates the secret that signs their callbacks, and copies
examples written as Runflow's, filled in with this server's address. The tokens are tried
against the real /v1/."""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import os
import re
from decimal import Decimal
from html import unescape

import pytest
from django.test import Client
from django.utils import timezone

from accounts import budgets
from accounts.api_views import NEW_TOKEN, VERIFY_EXAMPLE
from accounts.models import ApiToken, Profile
from api.callbacks import sign
from tests.factories import make_run

pytestmark = pytest.mark.django_db

URL = "/api/"
RUNS = "http://testserver/v1/models/meta/sam-3/image/runs"
# The body of Runflow's SAM 3 examples, as every example on the page must send it.
BODY = {
    "input": {
        "prompt": "keyboard",
        "image_url": "https://v3b.fal.media/files/b/0a92a995/fV5oYdcCV3NAmgWJISpIP_tmpdddcks4v.png",
        "apply_mask": False,
        "return_multiple_masks": True,
    },
    "callback_url": "https://your-server.com/webhook",
}


def text(response) -> str:
    """The page as a person reads it: tags gone, entities decoded, spaces collapsed."""
    html = response.content.decode()
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def example(response, lang: str) -> str:
    found = re.search(rf'<code id="example-{lang}">(.*?)</code>', response.content.decode(), re.S)
    assert found, f"no {lang} example"
    return unescape(found[1])


def shown_token(response) -> str:
    found = re.search(r'id="new-token-value"[^>]*value="([^"]+)"', response.content.decode())
    return found[1] if found else ""


def token_row(response, token: ApiToken) -> str:
    found = re.search(
        rf'<tr id="token-{token.pk}"[^>]*>(.*?)</tr>', response.content.decode(), re.S
    )
    assert found, f"no row for {token.name}"
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", found[1]))).strip()


def field_errors(response, name: str) -> str:
    html = response.content.decode()
    block = re.search(rf'<div class="field has-error" id="field-{name}">(.*?)</div>', html, re.S)
    return unescape(re.sub(r"<[^>]+>|\s+", " ", block[1])) if block else ""


def make_token(client: Client, name: str = "laptop") -> tuple[ApiToken, str]:
    """A token made through the page: the row, and the token as the page showed it."""
    made = client.post("/api/tokens/", {"name": name})
    assert made.status_code == 302 and made["Location"] == "/api/#new-token"
    page = client.get(URL)
    raw = shown_token(page)
    assert raw
    return ApiToken.objects.get(digest=hashlib.sha256(raw.encode()).hexdigest()), raw


def calls(raw: str) -> int:
    """The status /v1/ answers a request made with this token."""
    return Client().get("/v1/runs", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code


# --- who may see it ------------------------------------------------------------------------------


def test_strangers_are_sent_to_sign_in(stranger: Client, owner) -> None:
    for path in (URL, "/api/tokens/", "/api/tokens/1/revoke/", "/api/secret/rotate/"):
        response = stranger.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/accounts/login/?next=/api/"), path
    assert stranger.post("/api/tokens/", {"name": "x"}).status_code == 302
    assert not ApiToken.objects.exists()


def test_every_teammate_finds_it_in_the_top_bar(signed_in: Client, teammate_client: Client):
    for client in (signed_in, teammate_client):
        assert 'href="/api/"' in client.get("/runs/").content.decode()
    html = signed_in.get(URL).content.decode()
    assert 'href="/api/" aria-current="page">API</a>' in html
    assert 'href="/api/docs/"' in html  # the docs, beside it


def test_the_page_is_never_cached(signed_in: Client) -> None:
    # It shows a secret (and, once, a token): not for a shared cache, nor for Back.
    assert "no-store" in signed_in.get(URL)["Cache-Control"]


# --- tokens ----------------------------------------------------------------------------------


def test_a_new_token_is_shown_once_and_only_its_hash_is_kept(signed_in: Client, owner) -> None:
    empty = signed_in.get(URL)
    assert "You have no tokens yet." in text(empty)

    row, raw = make_token(signed_in)
    assert re.fullmatch(r"sam3web_[A-Za-z0-9_-]{43}", raw)
    assert row.user == owner and row.name == "laptop"
    assert row.digest == hashlib.sha256(raw.encode()).hexdigest()
    stored = ApiToken.objects.filter(pk=row.pk).values().get()
    assert raw not in [str(value) for value in stored.values()]
    assert row.hint == raw[:12]

    # Shown on the page that followed, and then never again: not on a reload, and it is no
    # longer in the session either.
    again = signed_in.get(URL)
    assert shown_token(again) == "" and raw not in again.content.decode()
    assert NEW_TOKEN not in signed_in.session
    assert "Your new token" not in text(again)
    assert f"laptop {raw[:12]}…" in token_row(again, row)
    assert "never" in token_row(again, row)
    assert calls(raw) == 200


def test_the_token_is_shown_with_a_copy_button_and_in_the_examples(signed_in: Client) -> None:
    signed_in.post("/api/tokens/", {"name": "laptop"})
    page = signed_in.get(URL)
    raw = shown_token(page)
    html = page.content.decode()
    assert "Copy it now: it is shown this once." in text(page)
    assert 'data-copy-from="new-token-value"' in html
    assert "sam3web/copy.js" in html
    for lang in ("python", "node", "curl"):
        assert f"Bearer {raw}" in example(page, lang), lang
        assert "SAM3WEB_API_KEY" not in example(page, lang), lang


def test_each_token_is_listed_with_when_it_was_last_used(signed_in: Client) -> None:
    first, raw = make_token(signed_in, "laptop")
    second, _ = make_token(signed_in, "nightly batch")
    assert calls(raw) == 200
    page = signed_in.get(URL)
    assert "now" in token_row(page, first)  # last used just now
    assert "never" in token_row(page, second)
    html = page.content.decode()
    assert html.index(f'id="token-{second.pk}"') < html.index(f'id="token-{first.pk}"')
    today = timezone.localtime().strftime("%-d %b %Y")
    assert today in token_row(page, first)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "Give the token a name."),
        ("   ", "Give the token a name."),
        ("x" * 101, "Ensure this value has at most 100 characters (it has 101)."),
        ("LAPTOP", "You already have a token named “LAPTOP”."),
    ],
)
def test_a_bad_name_is_refused_beside_the_field(signed_in: Client, owner, name, error) -> None:
    ApiToken.issue(owner, "laptop")
    response = signed_in.post("/api/tokens/", {"name": name})
    assert response.status_code == 400
    assert error in field_errors(response, "name")
    assert ApiToken.objects.count() == 1
    assert shown_token(response) == ""


def test_a_revoked_tokens_name_may_be_used_again(signed_in: Client, owner) -> None:
    old, _ = ApiToken.issue(owner, "laptop")
    ApiToken.objects.filter(pk=old.pk).update(revoked_at=timezone.now())
    new, raw = make_token(signed_in, "laptop")
    assert new.pk != old.pk and calls(raw) == 200


def test_a_teammates_tokens_are_theirs_alone(signed_in: Client, teammate) -> None:
    theirs, _ = ApiToken.issue(teammate, "grace's laptop")
    page = signed_in.get(URL)
    assert "grace's laptop" not in text(page) and theirs.hint not in page.content.decode()
    # The same name is fine for someone else.
    make_token(signed_in, "grace's laptop")


# --- revoking ------------------------------------------------------------------------------------


def test_revoking_asks_first_then_the_token_stops_at_once(signed_in: Client) -> None:
    row, raw = make_token(signed_in)
    page = signed_in.get(URL)
    assert f'href="/api/tokens/{row.pk}/revoke/"' in page.content.decode()

    confirm = signed_in.get(f"/api/tokens/{row.pk}/revoke/")
    assert confirm.status_code == 200
    assert "Revoke the token “laptop”?" in text(confirm)
    assert f"{row.hint}…" in text(confirm)
    row.refresh_from_db()
    assert row.active and calls(raw) == 200  # asking changed nothing

    response = signed_in.post(f"/api/tokens/{row.pk}/revoke/", follow=True)
    assert response.redirect_chain == [("/api/", 302)]
    assert messages_of(response) == [
        "The token “laptop” is revoked: requests made with it are refused from now on."
    ]
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert calls(raw) == 401
    # It stays listed, as revoked, without a button.
    listed = token_row(response, row)
    assert "Revoked" in listed and "Revoke laptop" not in listed

    # Twice: it stays revoked, from the first time.
    first = row.revoked_at
    again = signed_in.post(f"/api/tokens/{row.pk}/revoke/", follow=True)
    assert messages_of(again) == ["The token “laptop” was already revoked."]
    row.refresh_from_db()
    assert row.revoked_at == first


def test_nobody_revokes_someone_elses_token(
    signed_in: Client, admin_client: Client, teammate
) -> None:
    theirs, raw = ApiToken.issue(teammate, "grace's laptop")
    for client in (signed_in, admin_client):
        assert client.get(f"/api/tokens/{theirs.pk}/revoke/").status_code == 404
        assert client.post(f"/api/tokens/{theirs.pk}/revoke/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.active and calls(raw) == 200
    assert signed_in.post("/api/tokens/999999/revoke/").status_code == 404


def test_a_disabled_accounts_tokens_stop_at_once(admin_client: Client, teammate) -> None:
    _row, raw = ApiToken.issue(teammate, "laptop")
    assert calls(raw) == 200
    confirm = admin_client.get(f"/team/{teammate.pk}/disable/")
    assert "their API tokens stop working at once" in text(confirm)
    admin_client.post(f"/team/{teammate.pk}/disable/")
    assert calls(raw) == 401
    admin_client.post(f"/team/{teammate.pk}/enable/")
    assert calls(raw) == 200


def test_a_token_revoked_before_its_page_was_seen_is_not_shown(signed_in: Client) -> None:
    signed_in.post("/api/tokens/", {"name": "laptop"})
    ApiToken.objects.update(revoked_at=timezone.now())
    assert shown_token(signed_in.get(URL)) == ""


# --- the examples --------------------------------------------------------------------------------


def test_the_examples_are_runflows_with_this_servers_address(signed_in: Client) -> None:
    page = signed_in.get(URL)
    python, node, curl = (example(page, lang) for lang in ("python", "node", "curl"))

    # Python, as Runflow's: requests.post(URL, headers=..., json=...).
    call = next(
        node_
        for node_ in ast.walk(ast.parse(python))
        if isinstance(node_, ast.Call) and ast.unparse(node_.func) == "requests.post"
    )
    assert ast.literal_eval(call.args[0]) == RUNS
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert keywords == {"headers": {"Authorization": "Bearer SAM3WEB_API_KEY"}, "json": BODY}
    assert python.startswith("import requests\n") and "print(data)" in python

    # Node.js: fetch(URL, {method, headers, body: JSON.stringify(...)}).
    assert f'await fetch(\n  "{RUNS}",' in node
    assert '"Authorization": "Bearer SAM3WEB_API_KEY",' in node
    assert '"Content-Type": "application/json",' in node
    body = re.search(r"JSON\.stringify\((.*?)\),\n", node, re.S)
    assert body and json.loads(body[1]) == BODY

    # cURL: the key from the shell's environment, the body from a here-document.
    assert curl.startswith(f"curl -X POST {RUNS} \\\n")
    assert '-H "Authorization: Bearer $SAM3WEB_API_KEY"' in curl
    assert '-H "Content-Type: application/json"' in curl
    doc = re.search(r"<<'JSON'\n(.*)\nJSON\n$", curl, re.S)
    assert doc and json.loads(doc[1]) == BODY


def test_the_address_is_the_one_the_teammate_reached(signed_in: Client, settings) -> None:
    settings.ALLOWED_HOSTS = ["sam3web.example.org"]
    page = signed_in.get(URL, HTTP_HOST="sam3web.example.org", secure=True)
    assert "https://sam3web.example.org/v1/models/meta/sam-3/image/runs" in example(page, "curl")


def test_the_verification_example_accepts_sam3webs_signature_only(
    signed_in: Client, owner, monkeypatch
) -> None:
    page = signed_in.get(URL)
    snippet = example(page, "verify")
    assert snippet == VERIFY_EXAMPLE
    assert "hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()" in snippet
    assert "hmac.compare_digest(" in snippet and "Runflow-Signature" in snippet
    secret = Profile.of(owner).callback_secret
    monkeypatch.setenv("SAM3WEB_CALLBACK_SECRET", secret)
    receiver: dict = {}
    exec(compile(snippet, "verify.py", "exec"), receiver)  # as a receiver runs it
    body = b'{"event": "run.completed", "run_id": "r1"}'
    # Signed as sam3web's callbacks are signed (api.callbacks.sign).
    assert receiver["verify"](body, sign(body, secret))
    assert not receiver["verify"](body + b" ", sign(body, secret))
    assert not receiver["verify"](body, sign(body, "whsec_another"))
    assert not receiver["verify"](body, "")
    assert os.environ["SAM3WEB_CALLBACK_SECRET"] == secret


# --- the signing secret --------------------------------------------------------------------------


def test_the_secret_is_shown_with_a_rotate_button(signed_in: Client, owner) -> None:
    page = signed_in.get(URL)
    secret = Profile.of(owner).callback_secret
    assert secret.startswith("whsec_")
    assert re.search(rf'id="signing-secret-value"[^>]*value="{secret}"', page.content.decode())
    assert 'action="/api/secret/rotate/"' in page.content.decode()
    assert "The current one keeps signing callbacks for 24 hours" in text(page)
    assert "End the old secret now" not in text(page)


def test_rotating_keeps_the_old_secret_signing_for_24_hours(signed_in: Client, owner) -> None:
    old = Profile.of(owner).callback_secret
    response = signed_in.post("/api/secret/rotate/", follow=True)
    assert response.redirect_chain == [("/api/#signing-secret", 302)]
    profile = Profile.of(owner)
    assert profile.callback_secret != old and profile.previous_secret == old
    assert profile.previous_until is not None
    left = profile.previous_until - timezone.now()
    assert dt.timedelta(hours=23, minutes=59) < left <= dt.timedelta(hours=24)
    # Callbacks go on being signed with the old one until then.
    assert profile.signing_secret() == old
    until = timezone.localtime(profile.previous_until)
    [message] = messages_of(response)
    assert "Callbacks are still signed with the old one until" in message
    assert f"{until:%-d %b %Y, %H:%M}" in message

    page = text(response)
    assert "Rotation under way." in page
    assert f"old secret ( {old[:10]}… ) until {until:%-d %b %Y, %H:%M} , then with the new" in page
    assert "End the old secret now" in page
    assert profile.callback_secret in response.content.decode()
    assert old not in response.content.decode()  # only its beginning, to recognise it


def test_a_second_rotation_waits_for_the_first(signed_in: Client, owner) -> None:
    signed_in.post("/api/secret/rotate/", follow=True)
    before = Profile.of(owner)
    response = signed_in.post("/api/secret/rotate/", follow=True)
    assert messages_of(response) == [
        "A rotation is already under way. End the old secret first (or wait until it stops "
        "by itself), then rotate again."
    ]
    after = Profile.of(owner)
    assert (after.callback_secret, after.previous_secret, after.previous_until) == (
        before.callback_secret,
        before.previous_secret,
        before.previous_until,
    )


def test_ending_the_old_secret_signs_with_the_new_one_at_once(signed_in: Client, owner) -> None:
    signed_in.post("/api/secret/rotate/", follow=True)
    response = signed_in.post("/api/secret/end-grace/", follow=True)
    assert response.redirect_chain == [("/api/#signing-secret", 302)]
    assert messages_of(response) == [
        "The old secret no longer signs anything: callbacks are signed with the current "
        "secret from now on."
    ]
    profile = Profile.of(owner)
    assert profile.previous_secret == "" and profile.previous_until is None
    assert profile.signing_secret() == profile.callback_secret
    assert "Rotation under way." not in text(response)
    # Nothing left to end; and a new rotation may start.
    again = signed_in.post("/api/secret/end-grace/", follow=True)
    assert messages_of(again) == ["The old secret had already stopped signing callbacks."]
    assert signed_in.post("/api/secret/rotate/").status_code == 302
    assert Profile.of(owner).previous_secret == profile.callback_secret


def test_a_grace_that_ran_out_is_no_longer_shown(signed_in: Client, owner) -> None:
    signed_in.post("/api/secret/rotate/")
    Profile.objects.filter(user=owner).update(
        previous_until=timezone.now() - dt.timedelta(seconds=1)
    )
    page = signed_in.get(URL)
    assert "Rotation under way." not in text(page) and "Rotate" in text(page)


def test_the_secret_changes_only_by_post(signed_in: Client, owner) -> None:
    secret = Profile.of(owner).callback_secret
    assert signed_in.get("/api/secret/rotate/").status_code == 405
    assert signed_in.get("/api/secret/end-grace/").status_code == 405
    assert Profile.of(owner).callback_secret == secret


# --- the budget ----------------------------------------------------------------------------------


def test_the_page_says_what_budget_is_left(signed_in: Client, owner) -> None:
    assert "No monthly budget limits your runs. You have spent $0.00 this month." in text(
        signed_in.get(URL)
    )
    Profile.of(owner)
    Profile.objects.filter(user=owner).update(monthly_budget=Decimal("1.00"))
    make_run(owner, cost=Decimal("0.25"))
    page = text(signed_in.get(URL))
    assert "$0.75 of your $1.00 monthly budget left (about 150 runs)." in page
    assert budgets.standing(owner).text in page


def test_a_spent_budget_is_said_plainly(signed_in: Client, owner, settings) -> None:
    settings.SAM3WEB_TEAM_MONTHLY_BUDGET = Decimal("0.10")
    make_run(owner, cost=Decimal("0.10"))
    page = text(signed_in.get(URL))
    assert "The team's monthly budget of $0.10 is spent" in page
    assert "Runs made through the API are refused until then (HTTP 402)." in page
