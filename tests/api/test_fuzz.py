"""Schemathesis against the live app, from the document it serves (/v1/openapi.json): every
operation with schema-valid and schema-invalid requests (its examples, its boundary values,
then random ones), each answer checked: never a 5xx, its status code documented, its headers
and its body as the document describes them.

Random data alone would only ever meet 401s, 404s and 422s (no image, no run with a random
id), so hooks mix in what a real caller has: an image that can be read (for the valid
bodies), the ids of runs that exist (succeeded with masks, with sync_mode, failed, canceled,
queued, a teammate's), the signed links of their files, and a real list cursor. The run is
seeded and derandomized, so a failure comes back the same on the next run."""

from __future__ import annotations

import base64
import collections
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import hypothesis
import pytest
import schemathesis
from django.test import Client
from hypothesis import strategies as st
from PIL import Image
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import ApiToken
from segmentation.models import Run
from tests.api.conftest import SAM3_PATH
from tests.factories import finished_run, make_run

SEED = 20261202
# Per operation and per phase; the whole run stays well under a minute.
MAX_EXAMPLES = 25

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


def tiny_png_uri() -> str:
    """An image small enough to send in every valid body (8×8, a few dozen bytes)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def file_links(run_json: dict[str, Any]) -> list[tuple[str, str]]:
    """(signed, name) of every /v1/files/ link in a run object."""
    urls = [run_json["input"]["image_url"]]
    output = run_json.get("output") or {}
    urls += [f["url"] for f in output.get("outputs", [])]
    links = []
    for url in urls:
        parts = urlsplit(url).path.split("/")
        if parts[1:3] == ["v1", "files"]:
            links.append((parts[3], parts[4]))
    return links


@pytest.fixture
def world(owner: Any, teammate: Any, live_server: Any, token: str, standin: Any, settings: Any):
    """Runs in every state, made the way the app makes them, and what a caller knows of them."""
    settings.SAM3WEB_API_RATE_PER_MINUTE = 100_000  # the fuzzer creates runs fast
    done = finished_run(owner, masks=2, metadata={"project": "fuzz"})
    inline = finished_run(owner, masks=1, sync_mode=True)
    failed = make_run(
        owner,
        status=Run.Status.FAILED,
        failure_code="MODEL_ERROR",
        failure_message="The model failed.",
        failure_stage="inference",
    )
    canceled = make_run(owner, status=Run.Status.CANCELED)
    queued = make_run(owner, status=Run.Status.QUEUED)
    theirs = finished_run(teammate, masks=1)
    Run.objects.filter(pk__in=[done.pk, failed.pk]).update(
        callback_url="https://hooks.example/sam3"
    )
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=30) as http:
        links = []
        for run in (done, inline, theirs):
            got = http.get(f"/v1/runs/{run.pk}")
            assert got.status_code == 200, got.text
            links += file_links(got.json())
        page = http.get("/v1/runs", params={"limit": 2}).json()
    assert page["next_pq"]
    WORLD.clear()
    WORLD.update(
        run_ids=[str(r.pk) for r in (done, inline, failed, canceled, queued, theirs)],
        links=links,
        cursor=page["next_pq"],
        image=tiny_png_uri(),
        headers=headers,
    )
    return WORLD


CONFIG = {
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
    "phases": {"stateful": {"enabled": False}},
}
# What the app's world holds for the hooks while a test runs (the ``world`` fixture fills it).
WORLD: dict[str, Any] = {}


def served_document() -> dict[str, Any]:
    """/v1/openapi.json as the app serves it, read when the module is collected (the tests are
    made from it then); the live server's copy is checked to be the same below."""
    response = Client(HTTP_HOST="localhost").get("/v1/openapi.json")
    assert response.status_code == 200, response.content[:500]
    return response.json()


DOCUMENT = served_document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict(CONFIG))


def runnable(case: Any, given: dict[str, Any]) -> Any:
    """The valid body made one a run can be made of, its options, metadata, client_ref and
    headers as generated: the readable 8×8 image, points and boxes moved onto it, a prompt,
    and no callback to a host that does not exist."""
    given["image_url"] = WORLD["image"]
    given.pop("text_prompt", None)
    case.body.pop("callback_url", None)
    for point in given.get("point_prompts") or []:
        point["x"], point["y"] = point["x"] % 8, point["y"] % 8
    for box in given.get("box_prompts") or []:
        box["x_min"], box["y_min"] = box["x_min"] % 7, box["y_min"] % 7
        box["x_max"], box["y_max"] = box["x_min"] + 1, box["y_min"] + 1
    if not (given.get("prompt") or "").strip():
        given["prompt"] = "thing"
    return case


@schema.hook("flatmap_case")
def with_real_data(context: Any, case: Any) -> Any:
    """Valid cases of the fuzzing phase made to reach further: bodies a run is made of, the
    ids of existing runs, real file links, a real cursor (each but the bodies mixed with the
    generated values). Invalid cases are left as they are."""
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return st.just(case)
    path = context.operation.path
    if path.endswith("/runs") and isinstance(case.body, dict):
        given = case.body.get("input")
        if isinstance(given, dict):
            # The examples and coverage phases send the document's own image URLs (refused,
            # 422): here every valid body makes a run.
            return st.just(runnable(case, given))
    if "{run_id}" in path:

        def existing(run_id: str | None) -> Any:
            if run_id is not None:
                case.path_parameters["run_id"] = run_id
            return case

        return st.sampled_from([None, *WORLD["run_ids"]]).map(existing)
    if path.startswith("/v1/files/"):

        def linked(link: tuple[str, str] | None) -> Any:
            if link is not None:
                case.path_parameters["signed"], case.path_parameters["name"] = link
            return case

        return st.sampled_from([None, *WORLD["links"]]).map(linked)
    if path == "/v1/runs":

        def paged(cursor: str | None) -> Any:
            if cursor is not None:
                case.query = {**(case.query or {}), "pq": cursor}
            return case

        return st.one_of(st.none(), st.just(WORLD["cursor"])).map(paged)
    return st.just(case)


# What each operation's fuzzing must have reached at least once: the hooks work, and the
# answers checked are not only refusals.
REACHES = {
    "POST /v1/models/meta/sam-3/image/runs": {201, 422},
    "POST /v1/models/{model_id}/runs": {404, 422},
    "GET /v1/runs": {200, 422},
    "GET /v1/runs/statuses": {200},
    "GET /v1/auth/me": {200},
    "GET /v1/runs/{run_id}": {200, 404},
    "GET /v1/runs/{run_id}/callback": {200, 404},
    "POST /v1/runs/{run_id}/callback-redeliveries": {201, 404, 422},
    "GET /v1/files/{signed}/{name}": {200, 404},
    "GET /v1/openapi.json": {200},
}


def test_every_operation_is_fuzzed() -> None:
    operations = {result.ok().label for result in schema.get_all_operations()}  # type: ignore[union-attr]
    assert operations == set(REACHES)


@pytest.fixture
def reached() -> Iterator[dict[str, set[int]]]:
    seen: dict[str, set[int]] = collections.defaultdict(set)
    yield seen
    for label, statuses in seen.items():
        if label in REACHES:
            missing = REACHES[label] - statuses
            assert not missing, f"{label} never answered {sorted(missing)} ({sorted(statuses)})"


@schema.parametrize()
@hypothesis.settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_the_api_answers_every_request_as_its_document_says(
    case: Any, world: dict[str, Any], live_server: Any, reached: dict[str, set[int]]
) -> None:
    headers = world["headers"]
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if negative and "Authorization" not in (case.headers or {}):
        # A case made invalid by leaving the token out goes without it: adding ours back
        # would leave only its other changes (an unknown query parameter, ignored), and a
        # request the app rightly accepts would read as invalid data accepted.
        headers = {}
    response = case.call_and_validate(base_url=live_server.url, headers=headers, checks=CHECKS)
    reached[case.operation.label].add(response.status_code)


def test_the_live_server_serves_the_document_the_tests_were_made_from(live_server: Any) -> None:
    served = httpx.get(f"{live_server.url}/v1/openapi.json").json()
    assert served["servers"] == [{"url": live_server.url}]
    assert {**served, "servers": DOCUMENT["servers"]} == DOCUMENT


def test_valid_bodies_with_a_readable_image_make_runs(
    world: dict[str, Any], owner: Any, live_server: Any
) -> None:
    """What the hooks rely on: a valid body with the readable image makes a run."""
    operation = schema["/v1/models/meta/sam-3/image/runs"]["POST"]
    made = 0
    for n in range(6):
        case = operation.Case(
            body={"input": {"image_url": world["image"], "prompt": f"thing {n}"}},
            headers={"Idempotency-Key": f"fuzz-{n}"},
        )
        response = case.call_and_validate(
            base_url=live_server.url, headers=world["headers"], checks=CHECKS
        )
        made += response.status_code == 201
    assert made == 6
    assert Run.objects.filter(owner=owner, token__isnull=False).count() == 6
    assert ApiToken.objects.filter(user=owner).count() == 1


@pytest.mark.parametrize("value", [{}, [], {"png": 1}, 1, True])
def test_an_output_format_that_is_not_text_is_refused_not_a_crash(
    api: httpx.Client, value: Any
) -> None:
    """Found by this fuzzer: an object for output_format was a 500 (unhashable), in the API
    and in the stand-in alike."""
    response = api.post(
        SAM3_PATH,
        json={"input": {"image_url": tiny_png_uri(), "prompt": "x", "output_format": value}},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["input", "output_format"]
