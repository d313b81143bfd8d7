"""What the API tests share: a teammate's token, an HTTP client for the live app that
carries it, and the bodies Runflow's examples send."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from accounts.models import ApiToken
from tests.factories import image_bytes

SAM3_PATH = "/v1/models/meta/sam-3/image/runs"


def cat_data_uri() -> str:
    return "data:image/jpeg;base64," + base64.b64encode(image_bytes("cat.jpg")).decode()


def body(**input: Any) -> dict[str, Any]:
    """A create body as the model page's examples send it, with cat.jpg inline."""
    return {
        "input": {
            "prompt": "cat",
            "image_url": cat_data_uri(),
            "include_scores": True,
            "include_boxes": True,
            "return_multiple_masks": True,
            **input,
        }
    }


@pytest.fixture
def token(owner: Any) -> str:
    """ada's API token (the token itself: only its hash is stored)."""
    _row, raw = ApiToken.issue(owner, "laptop")
    return raw


@pytest.fixture
def api(live_server: Any, token: str, standin: Any) -> Iterator[httpx.Client]:
    """The live app's /v1/, with ada's token, as a script would call it; the stand-in
    finishes runs by itself, as Runflow does."""
    standin.complete_after = 0.05
    with httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as client:
        yield client
