from __future__ import annotations

import httpx

from segmentation.models import Run
from tests.api.conftest import SAM3_PATH, body
from tests.factories import drain


def test_a_run_made_through_the_api_comes_back_with_its_masks(
    api: httpx.Client, fast_polling
) -> None:
    made = api.post(SAM3_PATH, json=body())
    assert made.status_code == 201, made.text
    run_id = made.json()["id"]
    assert made.json()["status_code"] == "queued"
    drain(lambda: Run.objects.get(pk=run_id).settled)
    got = api.get(f"/v1/runs/{run_id}").json()
    assert got["status_code"] == "succeeded"
    masks = got["output"]["model_data"]["masks"]
    assert masks
    anon = httpx.get(masks[0]["url"])
    assert anon.status_code == 200
    assert anon.content.startswith(b"\x89PNG")
