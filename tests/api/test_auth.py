"""Who may call /v1/: a valid, unrevoked token of an active teammate; everyone else gets
Runflow's 401, in JSON, whatever they send."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken
from tests.api.conftest import SAM3_PATH, body

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def create(client: Client, token: str | None, payload: Any = None, **headers: Any) -> Any:
    extra = bearer(token) if token else {}
    return client.post(
        SAM3_PATH,
        data=json.dumps(body() if payload is None else payload),
        content_type="application/json",
        **extra,
        **headers,
    )


def refused(response: Any, words: str) -> None:
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert data["code"] == "UNAUTHORIZED"
    assert words in data["message"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_token_is_sam3web_and_43_random_characters_stored_only_as_its_hash(owner) -> None:
    row, raw = ApiToken.issue(owner, "laptop")
    assert raw.startswith("sam3web_") and len(raw) >= len("sam3web_") + 32
    assert raw not in (row.digest, row.hint)
    assert row.hint == raw[:12]
    assert ApiToken.objects.get(pk=row.pk).digest == ApiToken.digest_of(raw)
    assert ApiToken.issue(owner, "laptop")[1] != raw


def test_no_token_is_refused(client: Client, standin) -> None:
    refused(create(client, None), "Authorization: Bearer")


@pytest.mark.parametrize(
    "header",
    ["Token sam3web_x", "Bearer", "Bearer ", "Basic YWRhOnB3", "sam3web_abc", "Bearer  \t"],
)
def test_a_malformed_header_is_refused(client: Client, header: str) -> None:
    response = client.get("/v1/runs", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"


def test_an_unknown_token_is_refused(client: Client, token: str) -> None:
    refused(client.get("/v1/runs", **bearer(token + "x")), "not valid")
    refused(client.get("/v1/runs", **bearer("sam3web_" + "A" * 43)), "not valid")


def test_a_revoked_token_stops_working_at_once(client: Client, owner, token: str) -> None:
    assert client.get("/v1/runs", **bearer(token)).status_code == 200
    ApiToken.objects.filter(user=owner).update(revoked_at=timezone.now())
    refused(client.get("/v1/runs", **bearer(token)), "revoked")


def test_a_disabled_teammates_tokens_stop_working_at_once(
    client: Client, owner, token: str, standin
) -> None:
    assert client.get("/v1/runs", **bearer(token)).status_code == 200
    owner.is_active = False
    owner.save(update_fields=["is_active"])
    refused(client.get("/v1/runs", **bearer(token)), "disabled")
    refused(create(client, token), "disabled")


def test_a_token_records_when_it_was_last_used(client: Client, owner, token: str) -> None:
    assert ApiToken.objects.get(user=owner).last_used_at is None
    client.get("/v1/runs", **bearer(token))
    row = ApiToken.objects.get(user=owner)
    first = row.last_used_at
    assert first is not None
    client.get("/v1/runs", **bearer(token))  # within the minute: not written again
    row.refresh_from_db()
    assert row.last_used_at == first


def test_a_session_is_no_key_to_the_api(signed_in: Client) -> None:
    response = signed_in.get("/v1/runs")
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"


def test_unknown_paths_and_methods_answer_in_json(client: Client, token: str) -> None:
    missing = client.get("/v1/nothing/here", **bearer(token))
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    wrong = client.delete("/v1/runs", **bearer(token))
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "METHOD_NOT_ALLOWED"
    assert wrong["Allow"] == "GET"
    other_model = client.post(
        "/v1/models/meta/sam-2/image/runs",
        data="{}",
        content_type="application/json",
        **bearer(token),
    )
    assert other_model.status_code == 404
    assert other_model.json()["code"] == "MODEL_NOT_FOUND"


@pytest.mark.parametrize("path", ["/v1/models/a%0Ab/runs", "/v1/%0A", "/v1/runs/%0A/callback"])
def test_even_odd_paths_under_v1_answer_in_json(client: Client, token: str, path: str) -> None:
    response = client.post(path, data="{}", content_type="application/json", **bearer(token))
    assert response.status_code in (404, 405)
    assert response["Content-Type"] == "application/json"
