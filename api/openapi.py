"""The OpenAPI document of /v1/ (built from segmentation.schema, so it cannot drift from what
the API accepts).

``document(base)`` is the whole OpenAPI 3.1 document, with ``base`` (where the caller reached
us) as its one server. Every field of SAM 3's input comes from ``schema.OPTIONS`` and the
module's limits (MAX_POINTS, MAX_PROMPT_CHARS...); the answers describe the run object of
``api.serialize`` and the errors of ``api.errors``. The docs page (``api.docs``) renders the same
document for people."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from api.auth import api_view
from api.serialize import MODEL_ID, RUN_STATUSES
from segmentation import schema

JSON = "application/json"
Schema = dict[str, Any]

CALLBACK_EVENTS = ["run.completed", "run.failed", "run.cancelled"]
DELIVERY_STATES = ["sending", "delivered", "failed"]
# An example run id, for the examples only.
EXAMPLE_ID = "3f9c2b1e-7d4a-4c1b-9e2f-5a6b7c8d9e0f"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(spec: Schema) -> Schema:
    """``spec`` that also takes null (JSON Schema 2020-12: a list of types)."""
    spec = dict(spec)
    kind = spec.get("type")
    if isinstance(kind, str):
        spec["type"] = [kind, "null"]
    if "enum" in spec and None not in spec["enum"]:
        spec["enum"] = [*spec["enum"], None]
    return spec


# --- SAM 3's input, from segmentation.schema --------------------------------------------------


def coordinate(description: str) -> Schema:
    return {
        "type": "integer",
        "minimum": 0,
        "maximum": schema.MAX_COORDINATE,
        "description": description,
    }


def object_id() -> Schema:
    return {
        "type": ["integer", "null"],
        "minimum": 0,
        "maximum": schema.MAX_OBJECT_ID,
        "description": "Prompts sharing an object_id refine one object; without one, each "
        "prompt is an object of its own.",
    }


def point_schema() -> Schema:
    return {
        "type": "object",
        "title": "Point",
        "description": "A point on the image, in pixels of the image as sent (0 ≤ x < width, "
        "0 ≤ y < height).",
        "properties": {
            "x": coordinate("Pixels from the left edge."),
            "y": coordinate("Pixels from the top edge."),
            "label": {
                "type": "integer",
                "enum": [0, 1],
                "description": "1: include this spot in the object; 0: exclude it.",
            },
            "object_id": object_id(),
        },
        "required": list(schema.POINTS.keys),
        "additionalProperties": False,
        "examples": [{"x": 120, "y": 80, "label": 1}],
    }


def box_schema() -> Schema:
    return {
        "type": "object",
        "title": "Box",
        "description": "A box on the image, in pixels; x_max and y_max are exclusive edges "
        "(x_min < x_max ≤ width, y_min < y_max ≤ height).",
        "properties": {
            "x_min": coordinate("Left edge."),
            "y_min": coordinate("Top edge."),
            "x_max": coordinate("Right edge (exclusive), more than x_min."),
            "y_max": coordinate("Bottom edge (exclusive), more than y_min."),
            "object_id": object_id(),
        },
        "required": list(schema.BOXES.keys),
        "additionalProperties": False,
        "examples": [{"x_min": 10, "y_min": 20, "x_max": 200, "y_max": 180}],
    }


def option_schema(option: schema.Option) -> Schema:
    spec: Schema = {"title": option.label, "default": option.default, "description": option.help}
    if option.kind is bool:
        spec["type"] = ["boolean", "null"]
    elif option.kind is int:
        spec["type"] = ["integer", "null"]
        if option.minimum is not None:
            spec["minimum"] = option.minimum
        if option.maximum is not None:
            spec["maximum"] = option.maximum
    else:
        spec["type"] = ["string", "null"]
    if option.choices:
        spec["enum"] = [value for value, _label in option.choices] + [None]
    spec["description"] += " Left out or null: the default."
    return spec


def input_properties() -> dict[str, Schema]:
    prompt = {
        "type": ["string", "null"],
        "maxLength": schema.MAX_PROMPT_CHARS,
        "description": "The concept to segment, in words (\u201ccat\u201d, \u201cyellow "
        "school bus\u201d). A run needs a prompt, points or boxes: sam3web refuses one with none "
        "(Runflow would segment \u201cwheel\u201d).",
        "examples": ["cat"],
    }
    properties: dict[str, Schema] = {
        "image_url": {
            "type": "string",
            "description": "The image: an http(s) URL sam3web downloads (public addresses only, "
            f"at most {settings.SAM3WEB_MAX_IMAGE_BYTES:,} bytes and "
            f"{settings.SAM3WEB_MAX_IMAGE_PIXELS:,} pixels), or the image inline as a data: "
            "URI (data:image/jpeg;base64,...) within the body's size limit.",
            "examples": ["https://images.example/cat.jpg"],
        },
        "prompt": prompt,
        "text_prompt": {
            **prompt,
            "deprecated": True,
            "description": "The deprecated name of prompt: the same text, or left out.",
        },
        "point_prompts": {
            "type": ["array", "null"],
            "items": ref("Point"),
            "maxItems": schema.MAX_POINTS,
            "description": "Points that mark the object (label 1) or what is not part of it "
            "(label 0). Each must lie inside the image.",
        },
        "box_prompts": {
            "type": ["array", "null"],
            "items": ref("Box"),
            "maxItems": schema.MAX_BOXES,
            "description": "Boxes around objects. Each must lie inside the image.",
        },
    }
    for option in schema.OPTIONS:
        properties[option.name] = option_schema(option)
    del properties["text_prompt"]["examples"]
    return properties


def input_schema() -> Schema:
    names = set(input_properties())
    assert names == schema.INPUT_NAMES, names ^ schema.INPUT_NAMES
    return {
        "type": "object",
        "title": "Input",
        "description": "SAM 3's input, field for field as Runflow's model takes it, with "
        "sam3web's limits.",
        "properties": input_properties(),
        "required": ["image_url"],
        "additionalProperties": False,
    }


def metadata_schema() -> Schema:
    return {
        "type": ["object", "null"],
        "description": "Your own keys and values, kept with the run and sent back in it and in "
        f"its callback: a flat object of at most {schema.MAX_METADATA_KEYS} keys "
        f"(1–{schema.MAX_METADATA_KEY_CHARS} characters), text values of at most "
        f"{schema.MAX_METADATA_VALUE_CHARS} characters, {schema.MAX_METADATA_BYTES:,} bytes in "
        "all.",
        "maxProperties": schema.MAX_METADATA_KEYS,
        "propertyNames": {"minLength": 1, "maxLength": schema.MAX_METADATA_KEY_CHARS},
        "additionalProperties": {
            "type": ["string", "number", "boolean", "null"],
            "maxLength": schema.MAX_METADATA_VALUE_CHARS,
        },
        "examples": [{"project": "demo"}],
    }


def create_body_schema() -> Schema:
    properties: dict[str, Schema] = {
        "input": ref("Input"),
        "callback_url": {
            "type": ["string", "null"],
            "maxLength": schema.MAX_CALLBACK_URL_CHARS,
            "pattern": "^https?://",
            "description": "Where sam3web POSTs the run's callback when it ends, signed with "
            "your signing secret (Runflow-Signature). Public addresses only.",
            "examples": ["https://hooks.example/sam3"],
        },
        "metadata": metadata_schema(),
        "client_ref": {
            "type": ["string", "null"],
            "maxLength": schema.MAX_CLIENT_REF_CHARS,
            "description": "Your own reference for the run, returned with it.",
            "examples": ["batch-7/img-0042"],
        },
    }
    assert set(properties) == schema.BODY_NAMES
    return {
        "type": "object",
        "title": "CreateRun",
        "properties": properties,
        "required": ["input"],
        "additionalProperties": False,
        "examples": [
            {
                "input": {"image_url": "https://images.example/cat.jpg", "prompt": "cat"},
                "callback_url": "https://hooks.example/sam3",
                "metadata": {"project": "demo"},
            }
        ],
    }


# --- what comes back ----------------------------------------------------------------------------

DATE_TIME: Schema = {"type": "string", "format": "date-time"}


def file_schema() -> Schema:
    return {
        "type": "object",
        "title": "File",
        "description": "A file of the output: a signed link to sam3web's copy that works "
        "without any header until it expires (or the file inline as a data: URI with "
        "sync_mode).",
        "properties": {
            "url": {"type": "string"},
            "content_type": {"type": "string", "enum": ["image/png", "image/jpeg", "image/webp"]},
            "file_name": {"type": "string"},
            "file_size": {"type": "integer", "minimum": 0},
            "width": {"type": "integer", "minimum": 1},
            "height": {"type": "integer", "minimum": 1},
        },
        "required": ["url", "content_type", "file_name", "file_size", "width", "height"],
    }


def box_values() -> Schema:
    return {
        "type": ["array", "null"],
        "items": {"type": "number"},
        "minItems": 4,
        "maxItems": 4,
        "description": "[cx, cy, w, h]: centre and size, normalized 0–1.",
    }


def output_schema() -> Schema:
    return {
        "type": "object",
        "title": "Output",
        "description": "What SAM 3 found: the mask files and the painted picture, with sam3web's "
        "links in place of Runflow's.",
        "properties": {
            "outputs": {
                "type": "array",
                "description": "Every file: the masks, then the painted picture.",
                "items": {
                    "allOf": [ref("File")],
                    "properties": {"type": {"const": "image"}},
                    "required": ["type"],
                },
            },
            "model_data": {
                "type": "object",
                "properties": {
                    "masks": {"type": "array", "items": ref("File")},
                    "image": {
                        "oneOf": [ref("File"), {"type": "null"}],
                        "description": "The image with the masks painted on (apply_mask).",
                    },
                    "prompt": {"type": "string"},
                    "metadata": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "index": {"type": "integer", "minimum": 0},
                                "score": {"type": ["number", "null"]},
                                "box": box_values(),
                            },
                            "required": ["index", "score", "box"],
                        },
                    },
                    "scores": {
                        "type": "array",
                        "items": {"type": ["number", "null"]},
                        "description": "One per mask (include_scores).",
                    },
                    "boxes": {
                        "type": "array",
                        "items": box_values(),
                        "description": "One per mask (include_boxes).",
                    },
                },
                "required": ["masks", "image", "prompt", "metadata"],
            },
            "nsfw_detected": {"description": "As Runflow reported it."},
            "seed": {"description": "As Runflow reported it."},
            "timing": {"description": "As Runflow reported it (inference_ms...)."},
        },
        "required": ["outputs", "model_data", "nsfw_detected", "seed", "timing"],
    }


def run_schema() -> Schema:
    text_or_null: Schema = {"type": ["string", "null"]}
    # The input's fields, their types and limits only: the create body describes them.
    echo = {
        name: {
            key: value
            for key, value in spec.items()
            if key not in ("examples", "description", "title", "default")
        }
        for name, spec in input_properties().items()
        if name != "text_prompt"  # folded into prompt
    }
    return {
        "type": "object",
        "title": "Run",
        "description": "A run, as Runflow describes one.",
        "properties": {
            "id": {"type": "string", "format": "uuid", "examples": [EXAMPLE_ID]},
            "model_id": {"type": "string", "const": MODEL_ID},
            "status_code": {
                "type": "string",
                "enum": RUN_STATUSES,
                "description": "queued → dispatching → running → succeeded, failed or "
                "canceled. A run stays running while sam3web copies its masks: succeeded "
                "always comes with its output.",
            },
            "input": {
                "type": "object",
                "description": "The input as sent, completed with the defaults; an inline image "
                "is given back as a link to sam3web's copy.",
                "properties": echo,
                "required": ["image_url"],
            },
            "output": {"oneOf": [ref("Output"), {"type": "null"}]},
            "metadata": {"type": ["object", "null"]},
            "client_ref": text_or_null,
            "callback_url": text_or_null,
            "cost": {
                "type": ["string", "null"],
                "pattern": r"^\d+(\.\d+)?$",
                "description": 'US dollars as a decimal string ("0.005"); null while under way.',
            },
            "duration_ms": {"type": ["integer", "null"], "minimum": 0},
            "created_at": DATE_TIME,
            "started_at": nullable(DATE_TIME),
            "completed_at": nullable(DATE_TIME),
            "failure_code": text_or_null,
            "failure_message": text_or_null,
            "failure_stage_code": text_or_null,
            "links": {
                "type": "object",
                "properties": {
                    "self": {"type": "string", "description": "This run in the API."},
                    "web": {"type": "string", "description": "This run's page in sam3web."},
                },
                "required": ["self", "web"],
            },
        },
        "required": [
            "id",
            "model_id",
            "status_code",
            "input",
            "output",
            "metadata",
            "client_ref",
            "callback_url",
            "cost",
            "duration_ms",
            "created_at",
            "started_at",
            "completed_at",
            "failure_code",
            "failure_message",
            "failure_stage_code",
            "links",
        ],
    }


def run_list_schema() -> Schema:
    return {
        "type": "object",
        "title": "RunList",
        "properties": {
            "items": {"type": "array", "items": ref("Run"), "description": "Newest first."},
            "next_pq": {
                "type": ["string", "null"],
                "description": "The cursor of the next page (pass it as pq); null on the last.",
            },
            "prev_pq": {"type": "null"},
            "next": {"type": ["string", "null"], "description": "The next page's URL."},
            "limit": {"type": "integer", "minimum": 1, "maximum": 500},
        },
        "required": ["items", "next_pq", "prev_pq", "next", "limit"],
    }


def me_schema() -> Schema:
    dollars: Schema = {"type": ["string", "null"], "description": "Dollars (a decimal string)."}
    return {
        "type": "object",
        "title": "Me",
        "properties": {
            "id": {"type": "integer"},
            "username": {"type": "string"},
            "token": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "hint": {"type": "string", "description": "The token's first characters."},
                    "created_at": {"type": "string", "format": "date-time"},
                    "last_used_at": {"type": ["string", "null"], "format": "date-time"},
                },
                "required": ["name", "hint", "created_at", "last_used_at"],
            },
            "budget": {
                "type": "object",
                "description": "This month's spending; null budgets are no limit.",
                "properties": {
                    "monthly": dollars,
                    "spent_this_month": dollars,
                    "team_monthly": dollars,
                    "team_spent_this_month": dollars,
                    "left": {**dollars, "description": "The tighter of the two; null: no limit."},
                    "price_per_run": dollars,
                },
                "required": [
                    "monthly",
                    "spent_this_month",
                    "team_monthly",
                    "team_spent_this_month",
                    "left",
                    "price_per_run",
                ],
            },
            "rate_limit_per_minute": {"type": "integer", "minimum": 1},
        },
        "required": ["id", "username", "token", "budget", "rate_limit_per_minute"],
    }


def delivery_schema() -> Schema:
    return {
        "type": "object",
        "title": "CallbackDelivery",
        "description": "One callback to the run's callback_url, with every attempt to deliver it.",
        "properties": {
            "id": {"type": "integer"},
            "event": {"type": "string", "enum": CALLBACK_EVENTS},
            "url": {"type": "string"},
            "request_id": {"type": "string", "description": "Its Runflow-Request-Id header."},
            "state": {"type": "string", "enum": DELIVERY_STATES},
            "attempts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "number": {"type": "integer", "minimum": 1},
                        "at": DATE_TIME,
                        "http_status": {"type": ["integer", "null"]},
                        "error": {"type": "string"},
                        "ms": {"type": "integer", "minimum": 0},
                    },
                    "required": ["number", "at", "http_status", "error", "ms"],
                },
            },
            "created_at": DATE_TIME,
            "finished_at": nullable(DATE_TIME),
        },
        "required": [
            "id",
            "event",
            "url",
            "request_id",
            "state",
            "attempts",
            "created_at",
            "finished_at",
        ],
    }


def callback_payload_schema() -> Schema:
    return {
        "type": "object",
        "title": "CallbackPayload",
        "description": "Runflow's callback body. Verify Runflow-Signature against the raw "
        "bytes before parsing them.",
        "properties": {
            "event": {"type": "string", "enum": CALLBACK_EVENTS},
            "run_id": {"type": "string", "format": "uuid"},
            "status": {
                "type": "string",
                "enum": ["succeeded", "failed", "cancelled"],
                "description": "Callbacks spell it cancelled, as Runflow's do.",
            },
            "output": {"oneOf": [ref("Output"), {"type": "null"}]},
            "duration_ms": {"type": ["integer", "null"]},
            "created_at": DATE_TIME,
            "completed_at": nullable(DATE_TIME),
            "metadata": {"type": ["object", "null"]},
        },
        "required": [
            "event",
            "run_id",
            "status",
            "output",
            "duration_ms",
            "created_at",
            "completed_at",
            "metadata",
        ],
    }


def error_schema() -> Schema:
    return {
        "type": "object",
        "title": "Error",
        "description": "Every error, Runflow's shape: always JSON.",
        "properties": {
            "code": {"type": "string", "description": "A stable code (VALIDATION_ERROR...)."},
            "message": {"type": "string", "description": "What went wrong, for a person."},
            "errors": {
                "type": ["array", "null"],
                "description": "Each field's problem (422), else null.",
                "items": {
                    "type": "object",
                    "properties": {
                        "loc": {
                            "type": "array",
                            "items": {"type": ["string", "integer"]},
                            "description": 'Where: ["input", "point_prompts", 0, "label"].',
                        },
                        "msg": {"type": "string"},
                        "type": {"type": "string", "description": "In pydantic's words."},
                    },
                    "required": ["loc", "msg", "type"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["code", "message", "errors"],
        "additionalProperties": False,
    }


# --- answers ------------------------------------------------------------------------------------

HEADERS: dict[str, Schema] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "string", "pattern": r"^\d+$"},
        "required": True,
    },
    "WWW-Authenticate": {
        "description": 'Bearer realm="sam3web"',
        "schema": {"type": "string"},
        "required": True,
    },
}


def errors_table() -> dict[str, tuple[str, list[str], list[str]]]:
    """Every error an operation may answer: status → (what it means, its codes, its headers),
    with the limits as configured now."""
    return {
        "401": (
            "No token, a malformed Authorization header, or a token that is unknown, revoked or "
            "belongs to a disabled account.",
            ["UNAUTHORIZED"],
            ["WWW-Authenticate"],
        ),
        "402": (
            "The run would go past your monthly budget (or the team's).",
            ["INSUFFICIENT_CREDIT"],
            [],
        ),
        "409": ("Conflict.", ["CONFLICT"], []),
        "413": (
            f"The body is larger than {settings.SAM3WEB_API_MAX_BODY_BYTES:,} bytes: give a large "
            "image by URL.",
            ["PAYLOAD_TOO_LARGE"],
            [],
        ),
        "422": (
            "The request is not valid; errors[] names each field.",
            ["VALIDATION_ERROR"],
            [],
        ),
        "429": (
            f"More than {settings.SAM3WEB_API_RATE_PER_MINUTE} runs created through the API in a "
            "minute.",
            ["RATE_LIMITED"],
            ["Retry-After"],
        ),
        "503": (
            "Try again later: the database is busy, or sam3web cannot send runs to Runflow now.",
            ["SERVICE_UNAVAILABLE", "MODEL_UNAVAILABLE"],
            ["Retry-After"],
        ),
    }


def error(status: str, description: str | None = None, codes: list[str] | None = None) -> Schema:
    """An error answer: the Error schema, with ``code`` kept to the codes it may carry."""
    meaning, default_codes, headers = errors_table().get(status, ("", [], []))
    codes = codes or default_codes
    answer: Schema = {
        "description": description or meaning,
        "content": {
            JSON: {
                "schema": {
                    "allOf": [ref("Error")],
                    "properties": {"code": {"type": "string", "enum": codes}},
                },
                "example": {"code": codes[0], "message": description or meaning, "errors": None},
            }
        },
    }
    if headers:
        answer["headers"] = {name: HEADERS[name] for name in headers}
    return answer


DATABASE_BUSY = "The database is busy: try again in a moment."
NOT_FOUND = "No run with this id (an id that is not a run's path at all: NOT_FOUND)."
NOT_YOURS = "No run of yours with this id (an id that is not a run's path at all: NOT_FOUND)."


def json_answer(description: str, schema_: Schema, **extra: Any) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema_}}, **extra}


def run_id_parameter() -> Schema:
    return {
        "name": "run_id",
        "in": "path",
        "required": True,
        "description": "The run's id.",
        "schema": {"type": "string", "format": "uuid"},
        "example": EXAMPLE_ID,
    }


def idempotency_parameter() -> Schema:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Makes retrying safe: the same key with the same body answers with the "
        "run it made (Idempotent-Replayed: true) instead of making another; the same key with "
        "another body is a 409. Use a new key (a UUID) for each new run.",
        "schema": {"type": "string", "maxLength": 255},
        "example": "6c1f0e9a-2b7d-4f4e-9d6a-0c3b5e8f1a27",
    }


def callbacks() -> Schema:
    """The callback a run with a callback_url sends when it ends."""
    return {
        "runEnded": {
            "{$request.body#/callback_url}": {
                "post": {
                    "summary": "The run ended (sam3web calls you)",
                    "description": "Sent once when the run succeeds, fails or is canceled; "
                    "again after a 5xx or no answer (3 attempts, 1 s then 2 s apart), never "
                    "after a 4xx. Verify the signature: hex HMAC-SHA256 of the raw body, keyed "
                    "with your whsec_ secret, compared in constant time.",
                    "parameters": [
                        {
                            "name": "Runflow-Signature",
                            "in": "header",
                            "required": True,
                            "description": "Lowercase hex HMAC-SHA256 of the raw body, keyed "
                            "with your signing secret (whsec_…).",
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        },
                        {
                            "name": "Runflow-Request-Id",
                            "in": "header",
                            "required": True,
                            "description": "The delivery's id: the same on every attempt.",
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {JSON: {"schema": ref("CallbackPayload")}},
                    },
                    "responses": {
                        "2XX": {"description": "Received: no more attempts."},
                        "4XX": {"description": "Refused (a bad signature): not sent again."},
                        "5XX": {"description": "Sent again, up to 3 attempts in all."},
                    },
                }
            }
        }
    }


def create_operation(*, generic: bool) -> Schema:
    price = Decimal(settings.SAM3WEB_PRICE_PER_IMAGE).normalize()
    operation: Schema = {
        "operationId": "createModelRun" if generic else "createRun",
        "tags": ["Runs"],
        "summary": "Create a run of another model (only SAM 3 here)"
        if generic
        else "Create a SAM 3 run",
        "description": (
            f"Runflow's generic path: sam3web runs one model, {MODEL_ID}; any other answers "
            "404 MODEL_NOT_FOUND."
            if generic
            else "Segment an image with SAM 3. The run is queued at once (201, status_code "
            "queued) and sent to Runflow by sam3web; poll GET /v1/runs/{run_id} or give a "
            f"callback_url. Each run counts ${price} against your monthly budget."
        ),
        "security": [{"bearerAuth": []}],
        "parameters": [idempotency_parameter()],
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": ref("CreateRun")}},
        },
        "responses": {
            "201": json_answer(
                "The run, queued (or, for a replayed Idempotency-Key, as it is now).",
                ref("Run"),
                links={
                    name: {
                        "operationId": operation_id,
                        "parameters": {"run_id": "$response.body#/id"},
                        "description": description,
                    }
                    for name, operation_id, description in (
                        ("GetRun", "getRun", "Poll the run."),
                        ("ListRunCallbacks", "listRunCallbacks", "Its callbacks."),
                        ("RedeliverRunCallback", "redeliverRunCallback", "Its callback again."),
                    )
                },
                headers={
                    "Idempotent-Replayed": {
                        "description": "true when the answer is the run an earlier request "
                        "with the same Idempotency-Key made.",
                        "schema": {"type": "string", "enum": ["true"]},
                    }
                },
            ),
            "401": error("401"),
            "402": error("402"),
            "409": error("409", "The Idempotency-Key was already used with a different body."),
            "413": error("413"),
            "422": error(
                "422",
                "The body is not valid: not JSON, a field of the wrong type or out of its "
                "limits, no prompt, a point or box outside the image, an image that cannot "
                "be fetched or read, a callback_url at a private address.",
            ),
            "429": error("429"),
            "503": error("503"),
        },
        "callbacks": callbacks(),
    }
    if generic:
        operation["parameters"] = [
            {
                "name": "model_id",
                "in": "path",
                "required": True,
                "description": f"The model: {MODEL_ID}.",
                "schema": {"type": "string"},
                "example": MODEL_ID,
            },
            idempotency_parameter(),
        ]
        operation["responses"]["404"] = error(
            "404", "sam3web runs one model: no other.", ["MODEL_NOT_FOUND"]
        )
    return operation


def status_list_pattern(statuses: list[str]) -> str:
    """What a ``status`` value may be, as the API reads it: statuses separated by commas, in
    any case, blanks around them (Python's whitespace) and empty ones ignored."""
    space = "".join(f"\\u{code:04x}" for code in range(0x10000) if chr(code).isspace())
    words = "|".join(
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in status)
        for status in statuses
    )
    item = f"[{space}]*(?:{words})?[{space}]*"
    return f"^{item}(?:,{item})*$"


def paths() -> dict[str, Schema]:
    statuses = [*RUN_STATUSES, "cancelled"]
    return {
        "/v1/models/meta/sam-3/image/runs": {"post": create_operation(generic=False)},
        "/v1/models/{model_id}/runs": {"post": create_operation(generic=True)},
        "/v1/runs": {
            "get": {
                "operationId": "listRuns",
                "tags": ["Runs"],
                "summary": "List your runs",
                "description": "Your own runs, newest first, a page at a time: pass next_pq as "
                "pq for the next page.",
                "security": [{"bearerAuth": []}],
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "Runs per page.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    },
                    {
                        "name": "pq",
                        "in": "query",
                        "description": "The cursor: next_pq of the page before.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "description": "Only runs in these statuses: repeat it, or separate "
                        "them with commas (status=failed,canceled); any case.",
                        "schema": {
                            "type": "array",
                            "items": {
                                "type": "string",
                                "pattern": status_list_pattern(statuses),
                                "x-enum-any-case": statuses,
                            },
                        },
                        "style": "form",
                        "explode": True,
                        "example": ["succeeded"],
                    },
                    {
                        "name": "q",
                        "in": "query",
                        "description": "Runflow's filter, by status and client_ref here: "
                        "status_code:succeeded AND client_ref:row-17. Several status_code "
                        "clauses keep the runs in any of their statuses, as status does.",
                        "schema": {"type": "string"},
                        "example": "status_code:succeeded",
                    },
                ],
                "responses": {
                    "200": json_answer("A page of runs.", ref("RunList")),
                    "401": error("401"),
                    "422": error("422", "limit, pq, status or q is not valid."),
                    "503": error("503", DATABASE_BUSY, ["SERVICE_UNAVAILABLE"]),
                },
            }
        },
        "/v1/runs/statuses": {
            "get": {
                "operationId": "listRunStatuses",
                "tags": ["Runs"],
                "summary": "List the statuses",
                "description": "Every status_code a run reads as, in the order a run passes "
                "through them.",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": json_answer(
                        "The statuses.",
                        {
                            "type": "object",
                            "properties": {
                                "items": {
                                    "type": "array",
                                    "items": {"type": "string", "enum": RUN_STATUSES},
                                }
                            },
                            "required": ["items"],
                        },
                    ),
                    "401": error("401"),
                    "503": error("503", DATABASE_BUSY, ["SERVICE_UNAVAILABLE"]),
                },
            }
        },
        "/v1/auth/me": {
            "get": {
                "operationId": "getMe",
                "tags": ["About"],
                "summary": "Check your token",
                "description": "Whose token this is, and what they may still spend this month "
                "(their budget and the team's) and how many runs a minute they may create.",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": json_answer("The token's teammate.", ref("Me")),
                    "401": error("401"),
                    "503": error("503", DATABASE_BUSY, ["SERVICE_UNAVAILABLE"]),
                },
            }
        },
        "/v1/runs/{run_id}": {
            "get": {
                "operationId": "getRun",
                "tags": ["Runs"],
                "summary": "Get a run",
                "description": "Any teammate's run, as the web app shows every run to every "
                "teammate (another's callback_url reads as null: it may carry a secret). Poll "
                "it until status_code is succeeded, failed or canceled.",
                "security": [{"bearerAuth": []}],
                "parameters": [run_id_parameter()],
                "responses": {
                    "200": json_answer("The run.", ref("Run")),
                    "401": error("401"),
                    "404": error("404", NOT_FOUND, ["RUN_NOT_FOUND", "NOT_FOUND"]),
                    "503": error("503", DATABASE_BUSY, ["SERVICE_UNAVAILABLE"]),
                },
            }
        },
        "/v1/runs/{run_id}/callback": {
            "get": {
                "operationId": "listRunCallbacks",
                "tags": ["Callbacks"],
                "summary": "List a run's callbacks",
                "description": "The callbacks sent (or being sent) to the run's callback_url, "
                "oldest first, each with its attempts (your own runs only: the URL may carry a "
                "secret).",
                "security": [{"bearerAuth": []}],
                "parameters": [run_id_parameter()],
                "responses": {
                    "200": json_answer(
                        "The run's callbacks.",
                        {
                            "type": "object",
                            "properties": {
                                "items": {"type": "array", "items": ref("CallbackDelivery")}
                            },
                            "required": ["items"],
                        },
                    ),
                    "401": error("401"),
                    "404": error("404", NOT_YOURS, ["RUN_NOT_FOUND", "NOT_FOUND"]),
                    "503": error("503", DATABASE_BUSY, ["SERVICE_UNAVAILABLE"]),
                },
            }
        },
        "/v1/runs/{run_id}/callback-redeliveries": {
            "post": {
                "operationId": "redeliverRunCallback",
                "tags": ["Callbacks"],
                "summary": "Send a run's callback again",
                "description": "A new delivery of the run's callback, as it would be sent now "
                "(your own runs only). No body.",
                "security": [{"bearerAuth": []}],
                "parameters": [run_id_parameter()],
                "responses": {
                    "201": json_answer("The new delivery, being sent.", ref("CallbackDelivery")),
                    "401": error("401"),
                    "404": error("404", NOT_YOURS, ["RUN_NOT_FOUND", "NOT_FOUND"]),
                    "409": error(
                        "409", "The run has not ended yet: its callback comes when it does."
                    ),
                    "422": error("422", "The run was made without a callback_url."),
                    "503": error("503", DATABASE_BUSY, ["SERVICE_UNAVAILABLE"]),
                },
            }
        },
        "/v1/files/{signed}/{name}": {
            "get": {
                "operationId": "getFile",
                "tags": ["Files"],
                "summary": "Download a file of a run",
                "description": "The links in a run's output and input: no Authorization "
                "header needed (the link is signed), until it expires "
                f"({settings.SAM3WEB_API_FILE_URL_TTL // 3600} hours) or the run is deleted.",
                "security": [],
                "parameters": [
                    {
                        "name": "signed",
                        "in": "path",
                        "required": True,
                        "description": "The signature, as the link has it.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "description": "The file's name (mask-1.png, preview.png...).",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                            "image/webp": {"schema": {"type": "string", "format": "binary"}},
                            "image/*": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "404": error(
                        "404", "The link has expired, or its run was deleted.", ["NOT_FOUND"]
                    ),
                    "503": error("503", DATABASE_BUSY, ["SERVICE_UNAVAILABLE"]),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "tags": ["About"],
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": json_answer("The OpenAPI 3.1 document of /v1/.", {"type": "object"}),
                },
            }
        },
    }


DESCRIPTION = """\
Runflow's API for SAM 3 (meta/sam-3/image), served by sam3web for the team's scripts: code \
written for Runflow works by changing its base URL and its key. Every run made here is an \
ordinary sam3web run: checked like the run form's, charged against your monthly budget, and \
shown in the history under your name.

Authenticate with your API token: `Authorization: Bearer sam3web_…`. Every error is JSON: \
`{"code", "message", "errors"}`; a path that does not exist answers 404 NOT_FOUND and a method \
an endpoint does not take 405 METHOD_NOT_ALLOWED (with Allow)."""


def document(base: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sam3web API",
            "version": "1",
            "summary": "Runflow's SAM 3 API, served by sam3web.",
            "description": DESCRIPTION,
        },
        "servers": [{"url": base}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "Runs", "description": "Create runs and read them."},
            {"name": "Callbacks", "description": "What sam3web sent to your callback_url."},
            {"name": "Files", "description": "The files of a run's output."},
            {"name": "About", "description": "This document."},
        ],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "sam3web_…",
                    "description": "Your sam3web API token (made on the API page).",
                }
            },
            "schemas": {
                "CreateRun": create_body_schema(),
                "Input": input_schema(),
                "Point": point_schema(),
                "Box": box_schema(),
                "Run": run_schema(),
                "Output": output_schema(),
                "File": file_schema(),
                "RunList": run_list_schema(),
                "CallbackDelivery": delivery_schema(),
                "CallbackPayload": callback_payload_schema(),
                "Error": error_schema(),
                "Me": me_schema(),
            },
        },
    }


@api_view("GET", public=True)
def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        document(request.build_absolute_uri("/").rstrip("/")),
        json_dumps_params={"ensure_ascii": False},
    )
