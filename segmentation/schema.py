"""SAM 3's input, as Runflow's model takes it, with sam3web's own limits: the one place that
says what a run may ask for (docs/runflow-api.md describes the contract).

Every caller validates through here: the run form and reuse, the Runflow stand-in, and the API
and batches after them. The module is plain Python (no Django), so the stand-in can use it
without settings.

What is checked, and how errors are reported:

* every field of ``input``: its type, its limits, and points and boxes against the size of
  the image the person sees (when it is known);
* errors are ``Issue``s with a field path, ``("input", "point_prompts", 0, "label")``, a
  message a person can read as it is ("Point 1: label must be 1 (include) or 0 (exclude), not
  2."), and a short type in pydantic's vocabulary ("literal_error"). ``SchemaError`` carries
  all the issues found, not only the first.

Numbers are whole numbers: JSON integers, or floats with nothing after the point (``3.0``), as
pydantic's lax mode takes them; ``true`` is not 1. Booleans must be JSON booleans.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_POINTS = 100
MAX_BOXES = 50
MAX_OBJECT_ID = 63
MAX_PROMPT_CHARS = 1000
# Far beyond any image (the pixel limit is 50 MP), small enough to be a number a person meant.
MAX_COORDINATE = 1_000_000
MAX_CLIENT_REF_CHARS = 255
MAX_CALLBACK_URL_CHARS = 2000
MAX_METADATA_KEYS = 32
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 500
MAX_METADATA_BYTES = 4096
OUTPUT_FORMATS = (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WebP"))

Loc = tuple[str | int, ...]
INPUT: Loc = ("input",)


@dataclass(frozen=True)
class Option:
    """One of SAM 3's options. ``default`` is what Runflow uses when the field is left out;
    ``initial`` is what sam3web's forms start with (scores and boxes on: the viewer uses them;
    several masks on: a text concept finds every instance)."""

    name: str
    kind: type
    default: Any
    initial: Any
    label: str
    help: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[tuple[str, str], ...] = ()  # (value, label)


OPTIONS: tuple[Option, ...] = (
    Option(
        "apply_mask",
        bool,
        True,
        True,
        "Apply mask",
        "Runflow also sends back a picture of the image with the masks painted on it.",
    ),
    # On in the form: a text concept then finds every instance, SAM 3's strength.
    Option(
        "return_multiple_masks",
        bool,
        False,
        True,
        "Return multiple masks",
        "Find every instance of what you ask for (up to “Max masks”), not only the best one.",
    ),
    Option("max_masks", int, 3, 3, "Max masks", "1 to 32.", minimum=1, maximum=32),
    Option("include_scores", bool, False, True, "Include scores", "A confidence score per mask."),
    Option("include_boxes", bool, False, True, "Include boxes", "A bounding box per mask."),
    Option(
        "sync_mode",
        bool,
        False,
        False,
        "Sync mode",
        "Runflow puts the files inside its answer instead of sending links to them "
        "(sam3web keeps its own copies either way).",
    ),
    Option(
        "output_format",
        str,
        "png",
        "png",
        "Output format",
        "The file type of the painted picture.",
        choices=OUTPUT_FORMATS,
    ),
)
OPTION_NAMES: tuple[str, ...] = tuple(option.name for option in OPTIONS)
OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
PROMPT_NAMES = ("prompt", "point_prompts", "box_prompts")
# Every key ``input`` may hold. text_prompt is the deprecated alias of prompt.
INPUT_NAMES = frozenset({"image_url", "prompt", "text_prompt", *PROMPT_NAMES, *OPTION_NAMES})
BODY_NAMES = frozenset({"input", "callback_url", "metadata", "client_ref"})

POINT_EXAMPLE = '[{"x": 120, "y": 80, "label": 1}]'
BOX_EXAMPLE = '[{"x_min": 10, "y_min": 20, "x_max": 200, "y_max": 180}]'
NEEDS_A_PROMPT = "Give a text prompt, or add points or boxes: a run needs at least one."


@dataclass(frozen=True)
class Issue:
    loc: Loc
    msg: str
    type: str

    @property
    def field(self) -> str:
        """The field of ``input`` (or of the body) the issue is about, "" for the whole."""
        parts = [p for p in self.loc if p not in ("body", "input")]
        return str(parts[0]) if parts else ""

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class SchemaError(ValueError):
    """Everything wrong with an input, as issues with field paths."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues = list(issues)
        super().__init__("; ".join(issue.msg for issue in self.issues))

    def first(self) -> Issue:
        return self.issues[0]

    def by_field(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for issue in self.issues:
            grouped.setdefault(issue.field, []).append(issue.msg)
        return grouped


class _Issues:
    def __init__(self) -> None:
        self.items: list[Issue] = []

    def add(self, loc: Loc, msg: str, type_: str) -> None:
        self.items.append(Issue(loc, msg, type_))

    def raise_any(self) -> None:
        if self.items:
            raise SchemaError(self.items)


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


# --- numbers ----------------------------------------------------------------------------------


def whole_number(value: Any, what: str, loc: Loc) -> int:
    """A whole number from JSON: 3 or 3.0, never true, 3.5, "3", negative or absurd."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(
            [Issue(loc, f"{what} must be a whole number, not {_shown(value)}.", "int_type")]
        )
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) > MAX_COORDINATE:
            raise SchemaError(
                [Issue(loc, f"{what} is far too large ({value:g}).", "less_than_equal")]
            )
        if not math.isfinite(value) or not value.is_integer():
            raise SchemaError(
                [Issue(loc, f"{what} must be a whole number, not {value}.", "int_from_float")]
            )
        value = int(value)
    if value < 0:
        raise SchemaError(
            [Issue(loc, f"{what} must not be negative (got {value}).", "greater_than_equal")]
        )
    if value > MAX_COORDINATE:
        raise SchemaError([Issue(loc, f"{what} is far too large ({value}).", "less_than_equal")])
    return value


# --- points and boxes -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    name: str
    plural: str
    field: str
    most: int
    keys: tuple[str, ...]
    example: str


POINTS = _Kind("point", "points", "point_prompts", MAX_POINTS, ("x", "y", "label"), POINT_EXAMPLE)
BOXES = _Kind(
    "box", "boxes", "box_prompts", MAX_BOXES, ("x_min", "y_min", "x_max", "y_max"), BOX_EXAMPLE
)


def clean_points(value: Any, loc: Loc = (*INPUT, "point_prompts")) -> list[dict[str, int]]:
    """A list of points {"x", "y", "label": 1 include / 0 exclude, "object_id"?}."""
    return _clean_list(POINTS, value, loc)


def clean_boxes(value: Any, loc: Loc = (*INPUT, "box_prompts")) -> list[dict[str, int]]:
    """A list of boxes {"x_min", "y_min", "x_max", "y_max", "object_id"?}; x_max and y_max are
    exclusive edges, so a box may reach the image's far edge."""
    return _clean_list(BOXES, value, loc)


def _clean_list(kind: _Kind, value: Any, loc: Loc) -> list[dict[str, int]]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise SchemaError(
            [Issue(loc, f"Give a JSON list of {kind.plural}, like {kind.example}.", "list_type")]
        )
    if len(value) > kind.most:
        raise SchemaError(
            [
                Issue(
                    loc,
                    f"At most {kind.most} {kind.plural} per run (got {len(value)}).",
                    "too_long",
                )
            ]
        )
    issues = _Issues()
    cleaned = []
    for index, item in enumerate(value):
        try:
            cleaned.append(_clean_item(kind, index, item, (*loc, index)))
        except SchemaError as exc:
            issues.items.extend(exc.issues)
    issues.raise_any()
    return cleaned


def _clean_item(kind: _Kind, index: int, item: Any, loc: Loc) -> dict[str, int]:
    label = f"{kind.name.capitalize()} {index + 1}"
    if not isinstance(item, Mapping):
        raise SchemaError(
            [Issue(loc, f"{label} must be an object, like {kind.example}.", "dict_type")]
        )
    issues = _Issues()
    for key in kind.keys:
        if key not in item:
            issues.add((*loc, key), f"{label} is missing {key}.", "missing")
    unknown = sorted(str(key) for key in item if key not in (*kind.keys, "object_id"))
    if unknown:
        issues.add(
            (*loc, unknown[0]),
            f"{label} has unknown keys: {', '.join(unknown)}.",
            "extra_forbidden",
        )
    issues.raise_any()
    cleaned: dict[str, int] = {}
    for key in kind.keys:
        try:
            cleaned[key] = whole_number(item[key], f"{label}: {key}", (*loc, key))
        except SchemaError as exc:
            issues.items.extend(exc.issues)
    if item.get("object_id") is not None:
        try:
            object_id = whole_number(item["object_id"], f"{label}: object_id", (*loc, "object_id"))
        except SchemaError as exc:
            issues.items.extend(exc.issues)
        else:
            if object_id > MAX_OBJECT_ID:
                issues.add(
                    (*loc, "object_id"),
                    f"{label}: object_id must be between 0 and {MAX_OBJECT_ID} (got {object_id}).",
                    "less_than_equal",
                )
            cleaned["object_id"] = object_id
    issues.raise_any()
    if kind is POINTS and cleaned["label"] not in (0, 1):
        issues.add(
            (*loc, "label"),
            f"{label}: label must be 1 (include) or 0 (exclude), not {cleaned['label']}.",
            "literal_error",
        )
    if kind is BOXES:
        for low, high in (("x_min", "x_max"), ("y_min", "y_max")):
            if cleaned[low] >= cleaned[high]:
                issues.add(loc, f"{label}: {low} must be less than {high}.", "value_error")
    issues.raise_any()
    return cleaned


def point_fits(point: Mapping[str, int], width: int, height: int) -> bool:
    return 0 <= point["x"] < width and 0 <= point["y"] < height


def box_fits(box: Mapping[str, int], width: int, height: int) -> bool:
    # x_max/y_max are exclusive edges: a box may reach the image's edge.
    return min(box["x_min"], box["y_min"]) >= 0 and box["x_max"] <= width and box["y_max"] <= height


def outside_image(
    points: Iterable[Mapping[str, int]], boxes: Iterable[Mapping[str, int]], size: tuple[int, int]
) -> list[Issue]:
    """Points and boxes that do not lie inside an image of ``size`` (as the person sees it)."""
    w, h = size
    issues = []
    for n, p in enumerate(points):
        if not point_fits(p, w, h):
            issues.append(
                Issue(
                    (*INPUT, "point_prompts", n),
                    f"Point {n + 1} ({p['x']}, {p['y']}) is outside the image, "
                    f"which is {w}×{h} (x 0–{w - 1}, y 0–{h - 1}).",
                    "value_error",
                )
            )
    for n, b in enumerate(boxes):
        if not box_fits(b, w, h):
            issues.append(
                Issue(
                    (*INPUT, "box_prompts", n),
                    f"Box {n + 1} reaches outside the image, which is {w}×{h} pixels.",
                    "value_error",
                )
            )
    return issues


# --- text and options ---------------------------------------------------------------------------


def clean_prompt(value: Any, loc: Loc) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SchemaError(
            [Issue(loc, f"{loc[-1]} must be text, not {_shown(value)}.", "string_type")]
        )
    if len(value) > MAX_PROMPT_CHARS:
        raise SchemaError(
            [
                Issue(
                    loc,
                    f"{loc[-1]} must be at most {MAX_PROMPT_CHARS} characters long "
                    f"(it has {len(value)}).",
                    "string_too_long",
                )
            ]
        )
    return value.strip()


def clean_option(option: Option, value: Any, loc: Loc) -> Any:
    name = option.name
    if option.kind is bool:
        if not isinstance(value, bool):
            raise SchemaError(
                [Issue(loc, f"{name} must be true or false, not {_shown(value)}.", "bool_type")]
            )
        return value
    if option.kind is int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))
        ):
            raise SchemaError(
                [Issue(loc, f"{name} must be a whole number, not {_shown(value)}.", "int_type")]
            )
        number = int(value)
        if option.minimum is not None and number < option.minimum:
            raise SchemaError(
                [
                    Issue(
                        loc,
                        f"{name} must be greater than or equal to {option.minimum} (got {number}).",
                        "greater_than_equal",
                    )
                ]
            )
        if option.maximum is not None and number > option.maximum:
            raise SchemaError(
                [
                    Issue(
                        loc,
                        f"{name} must be less than or equal to {option.maximum} (got {number}).",
                        "less_than_equal",
                    )
                ]
            )
        return number
    # Not a string (an object, a list: unhashable) is as wrong as an unknown string.
    if not isinstance(value, str) or value not in dict(option.choices):
        choices = ", ".join(value for value, _label in option.choices)
        raise SchemaError(
            [Issue(loc, f"{name} must be one of {choices}, not {_shown(value)}.", "enum")]
        )
    return value


# --- the whole input --------------------------------------------------------------------------


def validate_input(
    data: Any,
    *,
    image_size: tuple[int, int] | None = None,
    require_prompt: bool = True,
    loc: Loc = INPUT,
) -> dict[str, Any]:
    """SAM 3's ``input`` checked and completed: the prompt (its alias resolved, always present:
    Runflow segments "wheel" when it is missing), every option (Runflow's default where left
    out), and the points and boxes when there are any. ``image_url`` is accepted but neither
    checked nor returned: where the image comes from is the caller's business.

    ``require_prompt``: refuse an input with no text, point or box (sam3web never sends one;
    Runflow itself would take it). ``image_size``: also check that points and boxes lie inside
    the image. Raises SchemaError with every issue found."""
    if not isinstance(data, Mapping):
        raise SchemaError([Issue(loc, "input must be a JSON object.", "dict_type")])
    issues = _Issues()
    for key in data:
        if key not in INPUT_NAMES:
            issues.add((*loc, str(key)), f"input has no field {key}.", "extra_forbidden")

    def field(name: str, clean: Any, *args: Any) -> Any:
        try:
            return clean(*args)
        except SchemaError as exc:
            issues.items.extend(exc.issues)
            return None

    prompt = field("prompt", clean_prompt, data.get("prompt"), (*loc, "prompt"))
    alias = field("text_prompt", clean_prompt, data.get("text_prompt"), (*loc, "text_prompt"))
    if prompt and alias and prompt != alias:
        issues.add(
            (*loc, "prompt"), "prompt and its deprecated alias text_prompt differ.", "value_error"
        )
    cleaned: dict[str, Any] = {"prompt": prompt or alias or ""}
    for option in OPTIONS:
        value = data.get(option.name)
        cleaned[option.name] = (
            option.default
            if value is None
            else field(option.name, clean_option, option, value, (*loc, option.name))
        )
    points = field(
        "point_prompts", clean_points, data.get("point_prompts"), (*loc, "point_prompts")
    )
    boxes = field("box_prompts", clean_boxes, data.get("box_prompts"), (*loc, "box_prompts"))
    if points:
        cleaned["point_prompts"] = points
    if boxes:
        cleaned["box_prompts"] = boxes
    if image_size is not None:
        issues.items.extend(outside_image(points or [], boxes or [], image_size))
    prompt_broken = any(i.field in PROMPT_NAMES for i in issues.items)
    if require_prompt and not prompt_broken and not (cleaned["prompt"] or points or boxes):
        issues.add((*loc, "prompt"), NEEDS_A_PROMPT, "missing")
    issues.raise_any()
    return cleaned


def clean_metadata(value: Any, loc: Loc = ("metadata",)) -> dict[str, Any] | None:
    """sam3web's limits on a run's metadata: a flat JSON object of bounded size."""
    if value is None:
        return None

    def refuse(msg: str, type_: str = "value_error") -> SchemaError:
        return SchemaError([Issue(loc, msg, type_)])

    if not isinstance(value, Mapping):
        raise refuse('Metadata must be a JSON object, like {"project": "demo"}.', "dict_type")
    if len(value) > MAX_METADATA_KEYS:
        raise refuse(f"At most {MAX_METADATA_KEYS} metadata keys.", "too_long")
    for key, val in value.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise refuse(f"Metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters long.")
        if isinstance(val, dict | list):
            raise refuse(
                f"Metadata must be flat: the value of “{key}” is a nested {type(val).__name__}."
            )
        if isinstance(val, str) and len(val) > MAX_METADATA_VALUE_CHARS:
            raise refuse(
                f"The value of “{key}” is longer than {MAX_METADATA_VALUE_CHARS} characters."
            )
        if isinstance(val, float) and not math.isfinite(val):
            raise refuse(f"The value of “{key}” must be a finite number.")
    if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise refuse(f"Metadata must be at most {MAX_METADATA_BYTES} bytes.")
    return dict(value)


def validate_body(body: Any, *, require_prompt: bool = False) -> dict[str, Any]:
    """A create-run body as Runflow takes it: ``input`` (with an ``image_url``, whose value the
    caller checks), ``callback_url``, ``metadata`` (any object: sam3web's own limits are
    ``clean_metadata``) and ``client_ref``. Returns the body with the input completed."""
    if not isinstance(body, Mapping):
        raise SchemaError([Issue(("body",), "The body must be a JSON object.", "dict_type")])
    issues = _Issues()
    for key in body:
        if key not in BODY_NAMES:
            issues.add((str(key),), f"The body has no field {key}.", "extra_forbidden")
    cleaned: dict[str, Any] = {}
    if "input" not in body:
        issues.add(INPUT, "input is required.", "missing")
    else:
        try:
            cleaned["input"] = validate_input(body["input"], require_prompt=require_prompt)
        except SchemaError as exc:
            issues.items.extend(exc.issues)
        if isinstance(body["input"], Mapping):
            if "image_url" not in body["input"]:
                issues.add((*INPUT, "image_url"), "image_url is required.", "missing")
            elif not isinstance(body["input"]["image_url"], str):
                issues.add((*INPUT, "image_url"), "image_url must be text.", "string_type")
            elif "input" in cleaned:
                cleaned["input"]["image_url"] = body["input"]["image_url"]
    callback_url = body.get("callback_url")
    if callback_url is not None:
        if not (
            isinstance(callback_url, str)
            and callback_url.startswith(("https://", "http://"))
            and len(callback_url) <= MAX_CALLBACK_URL_CHARS
        ):
            issues.add(
                ("callback_url",),
                f"callback_url must be an http(s) URL of at most {MAX_CALLBACK_URL_CHARS} "
                "characters.",
                "url_parsing",
            )
        cleaned["callback_url"] = callback_url
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            issues.add(("metadata",), "metadata must be a JSON object.", "dict_type")
        cleaned["metadata"] = metadata
    client_ref = body.get("client_ref")
    if client_ref is not None:
        if not isinstance(client_ref, str):
            issues.add(("client_ref",), "client_ref must be text.", "string_type")
        elif len(client_ref) > MAX_CLIENT_REF_CHARS:
            issues.add(
                ("client_ref",),
                f"client_ref must be at most {MAX_CLIENT_REF_CHARS} characters long.",
                "string_too_long",
            )
        cleaned["client_ref"] = client_ref
    issues.raise_any()
    return cleaned
