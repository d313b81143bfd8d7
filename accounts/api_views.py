"""The API page (/api/): a teammate's tokens for sam3web's /v1/ (made, listed, revoked), the
secret that signs their callbacks (shown, rotated), their budget, and examples to copy.

A new token is shown once: the POST that makes it keeps it in the session for the one page
that follows (so a reload, or Back, cannot show it again nor make a second token), and the
database keeps only its hash. The page is never cached: it shows a secret."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import budgets
from accounts.forms import TokenForm
from accounts.models import ROTATION_GRACE, ApiToken, Profile
from api.serialize import base_url
from segmentation.usage import money

# The session key of a token just made: {"id": row id, "token": the token}, popped by the
# next page.
NEW_TOKEN = "sam3web.new_api_token"
# Runflow's model page examples, as they are there, with this server's address and token.
EXAMPLE_IMAGE = "https://v3b.fal.media/files/b/0a92a995/fV5oYdcCV3NAmgWJISpIP_tmpdddcks4v.png"
EXAMPLE_CALLBACK = "https://your-server.com/webhook"
PLACEHOLDER = "SAM3WEB_API_KEY"
LANGUAGES = [("python", "Python"), ("node", "Node.js"), ("curl", "cURL")]


def examples(base: str, token: str = "") -> dict[str, str]:
    """Python (requests), Node.js (fetch) and cURL, written as Runflow's SAM 3 page writes
    them, so its readers recognise them line for line: Runflow's address becomes ``base`` and
    its key placeholder (RUNFLOW_API_KEY; $RUNFLOW_API_KEY in the shell) ours, or ``token``."""
    url = base + reverse("api_create_run")
    key = token or PLACEHOLDER
    shell_key = token or f"${PLACEHOLDER}"
    python = f"""import requests

response = requests.post(
    "{url}",
    headers={{"Authorization": "Bearer {key}"}},
    json={{
        "input": {{
            "prompt": "keyboard",
            "image_url": "{EXAMPLE_IMAGE}",
            "apply_mask": False,
            "return_multiple_masks": True
        }},
        "callback_url": "{EXAMPLE_CALLBACK}"
    }},
)

data = response.json()
print(data)
"""
    node = f"""const response = await fetch(
  "{url}",
  {{
    method: "POST",
    headers: {{
      "Authorization": "Bearer {key}",
      "Content-Type": "application/json",
    }},
    body: JSON.stringify({{
        "input": {{
            "prompt": "keyboard",
            "image_url": "{EXAMPLE_IMAGE}",
            "apply_mask": false,
            "return_multiple_masks": true
        }},
        "callback_url": "{EXAMPLE_CALLBACK}"
    }}),
  }}
);

const data = await response.json();
console.log(data);
"""
    curl = f"""curl -X POST {url} \\
  -H "Authorization: Bearer {shell_key}" \\
  -H "Content-Type: application/json" \\
  --data-binary @- <<'JSON'
{{
    "input": {{
        "prompt": "keyboard",
        "image_url": "{EXAMPLE_IMAGE}",
        "apply_mask": false,
        "return_multiple_masks": true
    }},
    "callback_url": "{EXAMPLE_CALLBACK}"
}}
JSON
"""
    return {"python": python, "node": node, "curl": curl}


# What a receiver runs on each callback. The secret comes from the environment (a secret in
# code ends up in a repository); a list, so a rotation's two secrets can both be accepted.
VERIFY_EXAMPLE = '''import hashlib
import hmac
import os

# Your callback signing secret, from sam3web's API page. While a rotation is under way,
# list the new secret and the old one: callbacks are signed with either.
SECRETS = [os.environ["SAM3WEB_CALLBACK_SECRET"]]


def verify(raw_body: bytes, signature: str) -> bool:
    """Whether a callback really comes from sam3web. raw_body: the request body exactly
    as received (before parsing the JSON); signature: its Runflow-Signature header."""
    for secret in SECRETS:
        expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, signature):
            return True
    return False
'''


def _page(
    request: HttpRequest, form: TokenForm | None = None, *, status: int = 200
) -> HttpResponse:
    user = request.user
    assert user.is_authenticated  # LoginRequiredMiddleware: nobody else reaches a view here
    new_token: dict[str, Any] | None = request.session.pop(NEW_TOKEN, None)
    tokens = list(ApiToken.objects.filter(user=user))
    if new_token and not any(t.pk == new_token.get("id") and t.active for t in tokens):
        new_token = None  # revoked (in another tab) before it was ever shown
    profile = Profile.of(user)
    grace = profile.in_grace
    standing = budgets.standing(user)
    base = base_url(request)
    raw = new_token["token"] if new_token else ""
    code = examples(base, raw)
    context = {
        "form": form or TokenForm(user=user),
        "tokens": tokens,
        "active_count": sum(1 for t in tokens if t.active),
        "new_token": raw,
        "new_token_id": new_token["id"] if new_token else None,
        "profile": profile,
        "in_grace": grace,
        "previous_hint": profile.previous_secret[:10] if grace else "",
        "standing": standing,
        "budget_refusal": budgets.refusal(user),
        # What "keeps signing for 24 hours" would mean if rotated now (Profile.rotate's grace).
        "rotate_until": timezone.now() + ROTATION_GRACE,
        "base": base,
        "runs_url": base + reverse("api_create_run"),
        "examples": [{"id": lang, "label": label, "code": code[lang]} for lang, label in LANGUAGES],
        "spent_text": money(standing.spent),
        "placeholder": PLACEHOLDER,
        "verify_example": VERIFY_EXAMPLE,
    }
    return render(request, "accounts/api.html", context, status=status)


@never_cache
@require_GET
def api_page(request: HttpRequest) -> HttpResponse:
    return _page(request)


@never_cache
@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST, user=request.user)
    if not form.is_valid():
        return _page(request, form, status=400)
    row, raw = ApiToken.issue(request.user, form.cleaned_data["name"])
    request.session[NEW_TOKEN] = {"id": row.pk, "token": raw}
    return redirect(f"{reverse('api_tokens')}#new-token")


@never_cache
@require_http_methods(["GET", "POST"])
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """GET asks to confirm (a page of its own, so it works without JavaScript); POST revokes.
    A teammate revokes only their own tokens: anyone else's is not found."""
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    if request.method == "POST":
        # Conditional: two clicks (or two tabs) revoke once, and the first time stays.
        revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if revoked:
            messages.success(
                request,
                f"The token “{token.name}” is revoked: requests made with it are refused "
                "from now on.",
            )
        else:
            messages.info(request, f"The token “{token.name}” was already revoked.")
        return redirect("api_tokens")
    return render(request, "accounts/api_revoke.html", {"token": token})


@require_POST
def secret_rotate(request: HttpRequest) -> HttpResponse:
    profile = Profile.of(request.user)
    if profile.in_grace:
        # A second rotation now would stop the secret that signs today, at once, and sign
        # with one no receiver has seen yet: the 24 hours would mean nothing. One at a time.
        messages.error(
            request,
            "A rotation is already under way. End the old secret first (or wait until it "
            "stops by itself), then rotate again.",
        )
        return redirect(f"{reverse('api_tokens')}#signing-secret")
    profile.rotate()
    assert profile.previous_until is not None
    until = date_format(timezone.localtime(profile.previous_until), "j M Y, H:i T")
    messages.success(
        request,
        f"A new callback signing secret is made. Callbacks are still signed with the old one "
        f"until {until}, then with the new one: put the new secret in your receiver before "
        "then.",
    )
    return redirect(f"{reverse('api_tokens')}#signing-secret")


@require_POST
def secret_end_grace(request: HttpRequest) -> HttpResponse:
    profile = Profile.of(request.user)
    if not profile.in_grace:
        messages.info(request, "The old secret had already stopped signing callbacks.")
    else:
        profile.end_grace()
        messages.success(
            request,
            "The old secret no longer signs anything: callbacks are signed with the current "
            "secret from now on.",
        )
    return redirect(f"{reverse('api_tokens')}#signing-secret")
