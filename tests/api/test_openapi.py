"""The OpenAPI document of /v1/ (api/openapi.py) and the docs page made from it (/api/docs/):
a valid OpenAPI 3.1 document, every route documented, SAM 3's input exactly as
segmentation.schema checks it, answers that match what the API really sends, and a page that
shows all of it to signed-in teammates only."""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from api.openapi import document, status_list_pattern
from api.serialize import RUN_STATUSES, callback_payload, run_object
from segmentation import schema
from segmentation.models import Run
from tests.factories import finished_run, make_run

pytestmark = pytest.mark.django_db
BASE = "http://testserver"


@pytest.fixture
def doc() -> dict[str, Any]:
    return document(BASE)


def validator(doc: dict[str, Any], name: str) -> Any:
    """An OpenAPI 3.1 schema validator for one of the document's components (its $refs
    resolved in the document)."""
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return OAS31Validator(root, format_checker=OAS31Validator.FORMAT_CHECKER)


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


# --- the document -------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["servers"] == [{"url": BASE}]


def test_it_is_served_at_v1_openapi_json_with_the_callers_base(client: Client) -> None:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    served = response.json()
    assert served["servers"] == [{"url": BASE}]
    assert served == json.loads(json.dumps(document(BASE)))


def v1_routes() -> set[str]:
    """Every /v1/ path the app routes, in OpenAPI's spelling ("{run_id}")."""
    found = set()

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif route.startswith("v1/") and "(?P" not in route and "^" not in route:
                found.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))

    walk(get_resolver().url_patterns, "")
    return found


def test_every_v1_route_is_documented(doc: dict[str, Any]) -> None:
    routes = {path.replace("{token}", "{signed}") for path in v1_routes()}
    assert routes == set(doc["paths"])


def test_every_operation_says_who_may_call_it_and_what_goes_wrong(doc: dict[str, Any]) -> None:
    public = {"/v1/files/{signed}/{name}", "/v1/openapi.json"}
    for method, path, op in operations(doc):
        assert op["summary"] and op["operationId"], (method, path)
        if path in public:
            assert op["security"] == []
            assert "401" not in op["responses"]
        else:
            assert op["security"] == [{"bearerAuth": []}]
            assert "401" in op["responses"] and "503" in op["responses"]
        for status, answer in op["responses"].items():
            if status[0] in "45":
                spec = answer["content"]["application/json"]["schema"]
                assert spec["allOf"] == [{"$ref": "#/components/schemas/Error"}]
                assert spec["properties"]["code"]["enum"], (method, path, status)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "sam3web_…",
        "description": "Your sam3web API token (made on the API page).",
    }


def test_creating_a_run_documents_its_body_header_answers_and_callback(
    doc: dict[str, Any],
) -> None:
    op = doc["paths"]["/v1/models/meta/sam-3/image/runs"]["post"]
    assert [p["name"] for p in op["parameters"]] == ["Idempotency-Key"]
    assert op["parameters"][0]["in"] == "header"
    assert op["parameters"][0]["schema"]["maxLength"] == 255
    assert set(op["responses"]) == {"201", "401", "402", "409", "413", "422", "429", "503"}
    codes = {
        status: answer["content"]["application/json"]["schema"]["properties"]["code"]["enum"]
        for status, answer in op["responses"].items()
        if status != "201"
    }
    assert codes == {
        "401": ["UNAUTHORIZED"],
        "402": ["INSUFFICIENT_CREDIT"],
        "409": ["CONFLICT"],
        "413": ["PAYLOAD_TOO_LARGE"],
        "422": ["VALIDATION_ERROR"],
        "429": ["RATE_LIMITED"],
        "503": ["SERVICE_UNAVAILABLE", "MODEL_UNAVAILABLE"],
    }
    assert "Retry-After" in op["responses"]["429"]["headers"]
    assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    callback = op["callbacks"]["runEnded"]["{$request.body#/callback_url}"]["post"]
    headers = {p["name"] for p in callback["parameters"]}
    assert headers == {"Runflow-Signature", "Runflow-Request-Id"}


def test_the_input_is_segmentation_schemas_own(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    body, given = schemas["CreateRun"], schemas["Input"]
    assert set(body["properties"]) == schema.BODY_NAMES
    assert body["required"] == ["input"] and body["additionalProperties"] is False
    assert set(given["properties"]) == schema.INPUT_NAMES
    assert given["required"] == ["image_url"] and given["additionalProperties"] is False
    for option in schema.OPTIONS:
        spec = given["properties"][option.name]
        assert spec["default"] == option.default, option.name
        assert spec.get("minimum") == option.minimum
        assert spec.get("maximum") == option.maximum
        if option.choices:
            assert spec["enum"] == [value for value, _ in option.choices] + [None]
    assert given["properties"]["max_masks"]["minimum"] == 1
    assert given["properties"]["max_masks"]["maximum"] == 32
    assert given["properties"]["prompt"]["maxLength"] == schema.MAX_PROMPT_CHARS
    assert given["properties"]["text_prompt"]["deprecated"] is True
    assert given["properties"]["point_prompts"]["maxItems"] == schema.MAX_POINTS
    assert given["properties"]["box_prompts"]["maxItems"] == schema.MAX_BOXES
    for name, kind in (("Point", schema.POINTS), ("Box", schema.BOXES)):
        item = schemas[name]
        assert item["required"] == list(kind.keys)
        assert item["additionalProperties"] is False
        assert set(item["properties"]) == {*kind.keys, "object_id"}
        assert item["properties"]["object_id"]["maximum"] == schema.MAX_OBJECT_ID
        for key in kind.keys:
            if key != "label":
                assert item["properties"][key]["maximum"] == schema.MAX_COORDINATE
    assert schemas["Point"]["properties"]["label"]["enum"] == [0, 1]
    assert body["properties"]["client_ref"]["maxLength"] == schema.MAX_CLIENT_REF_CHARS
    assert body["properties"]["callback_url"]["maxLength"] == schema.MAX_CALLBACK_URL_CHARS
    metadata = body["properties"]["metadata"]
    assert metadata["maxProperties"] == schema.MAX_METADATA_KEYS
    assert metadata["propertyNames"]["maxLength"] == schema.MAX_METADATA_KEY_CHARS
    assert metadata["additionalProperties"]["maxLength"] == schema.MAX_METADATA_VALUE_CHARS


@pytest.mark.parametrize(
    "body",
    [
        {"input": {"image_url": "https://images.example/cat.jpg", "prompt": "cat"}},
        {
            "input": {
                "image_url": "data:image/png;base64,iVBORw0KGgo=",
                "point_prompts": [{"x": 1, "y": 2, "label": 0, "object_id": 3}],
                "box_prompts": [{"x_min": 0, "y_min": 0, "x_max": 5, "y_max": 5}],
                "max_masks": 32,
                "output_format": "webp",
                "apply_mask": None,
            },
            "metadata": {"project": "demo", "n": 3, "ok": True},
            "client_ref": "x" * 255,
            "callback_url": "https://hooks.example/sam3",
        },
    ],
)
def test_bodies_the_schema_module_takes_are_valid_documented_bodies(
    doc: dict[str, Any], body: dict[str, Any]
) -> None:
    schema.validate_body(body)
    schema.clean_metadata(body.get("metadata"))
    validator(doc, "CreateRun").validate(body)


@pytest.mark.parametrize(
    "change",
    [
        {"max_masks": 33},
        {"max_masks": 0},
        {"output_format": "gif"},
        {"prompt": "x" * (schema.MAX_PROMPT_CHARS + 1)},
        {"point_prompts": [{"x": 1, "y": 2}]},
        {"point_prompts": [{"x": 1, "y": 2, "label": 2}]},
        {"point_prompts": [{"x": 1, "y": 2, "label": 1, "z": 0}]},
        {"point_prompts": [{"x": 1, "y": 1, "label": 1}] * (schema.MAX_POINTS + 1)},
        {"box_prompts": [{"x_min": 0, "y_min": 0, "x_max": 1}]},
        {"box_prompts": [{"x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1}] * 51},
        {"apply_mask": "yes"},
        {"colour": "red"},
    ],
)
def test_inputs_the_schema_module_refuses_are_refused_by_the_document_too(
    doc: dict[str, Any], change: dict[str, Any]
) -> None:
    body = {"input": {"image_url": "https://images.example/cat.jpg", "prompt": "cat", **change}}
    with pytest.raises(schema.SchemaError):
        schema.validate_body(body)
    assert not validator(doc, "CreateRun").is_valid(body)


def test_the_status_filter_pattern_reads_statuses_as_the_api_does() -> None:
    pattern = re.compile(status_list_pattern([*RUN_STATUSES, "cancelled"]))
    for value in ("", "queued", "Succeeded,FAILED", " running , ,canceled", "cancelled"):
        assert pattern.match(value), value
    for value in ("queue", "done", "queued;failed", "queued failed", "succeeded1"):
        assert not pattern.match(value), value


# --- what the API sends matches the document ----------------------------------------------------


def test_run_objects_and_callbacks_match_their_schemas(doc: dict[str, Any], owner: Any) -> None:
    done = finished_run(owner, masks=2, metadata={"project": "demo"})
    inline = finished_run(owner, masks=1, sync_mode=True)
    failed = make_run(
        owner, status=Run.Status.FAILED, failure_code="MODEL_ERROR", failure_message="No."
    )
    runs = [done, inline, failed]
    runs += [make_run(owner, status=status) for status in Run.Status.values]
    for run in runs:
        run = Run.objects.select_related("image").get(pk=run.pk)
        obj = run_object(run, BASE)
        validator(doc, "Run").validate(obj)
        if obj["status_code"] in ("succeeded", "failed", "canceled"):
            validator(doc, "CallbackPayload").validate(callback_payload(run, BASE))
    assert run_object(done, BASE)["output"]["model_data"]["masks"]


def test_the_error_shape_is_the_apis(doc: dict[str, Any], client: Client) -> None:
    check = validator(doc, "Error")
    for response in (
        client.get("/v1/runs"),  # no token
        client.post("/v1/openapi.json"),  # a method it does not take
        client.get("/v1/nothing-here"),
    ):
        assert response.status_code in (401, 404, 405)
        check.validate(response.json())


# --- the docs page ------------------------------------------------------------------------------


def page_text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def test_the_docs_page_shows_every_endpoint_its_fields_and_errors(
    signed_in: Client, doc: dict[str, Any]
) -> None:
    response = signed_in.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    text = page_text(html)
    assert 'href="/v1/openapi.json"' in html
    for method, path, op in operations(doc):
        assert f'id="{op["operationId"]}"' in html
        assert method.upper() in text and path in text, path
        assert op["summary"] in text
        for param in op.get("parameters", []):
            assert param["name"] in text
        for status, answer in op["responses"].items():
            assert status in text
            spec = answer.get("content", {}).get("application/json", {}).get("schema", {})
            for code in spec.get("properties", {}).get("code", {}).get("enum", []):
                assert code in text, (path, status, code)
    # The body's fields, nested ones included, with their defaults and limits.
    for name in sorted(schema.INPUT_NAMES):
        assert f"input.{name}" in text
    for name in ("input.point_prompts[].label", "input.box_prompts[].x_max", "client_ref"):
        assert name in text
    assert "1 to 32" in text  # max_masks
    assert f"at most {schema.MAX_POINTS} items" in text
    assert f"at most {schema.MAX_PROMPT_CHARS:,} characters" in text
    assert 'one of "png", "jpeg", "webp"' in text
    # The schemas answers are made of, linked from the answers.
    for name in ("Run", "Output", "File", "RunList", "CallbackDelivery", "Error"):
        assert f'id="schema-{name}"' in html and f'href="#schema-{name}"' in html


def test_the_docs_page_needs_a_sign_in(client: Client) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/api/docs/")
