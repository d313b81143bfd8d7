"""SAM 3's input schema (segmentation.schema): every field, its defaults and limits, points
and boxes against the image, and errors as field paths with messages a person can read. Plain
Python: no database, no Django settings needed."""

from __future__ import annotations

from typing import Any

import pytest

from segmentation import schema
from segmentation.schema import SchemaError, validate_body, validate_input


def issues(data: Any, **kwargs: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(SchemaError) as info:
        validate_input(data, **kwargs)
    return [(issue.loc, issue.msg) for issue in info.value.issues]


def locs(data: Any, **kwargs: Any) -> list[tuple[str | int, ...]]:
    return [loc for loc, _msg in issues(data, **kwargs)]


def test_an_input_is_completed_with_runflows_defaults() -> None:
    assert validate_input({"prompt": " cat "}) == {
        "prompt": "cat",
        "apply_mask": True,
        "return_multiple_masks": False,
        "max_masks": 3,
        "include_scores": False,
        "include_boxes": False,
        "sync_mode": False,
        "output_format": "png",
    }


def test_every_option_is_described_once_with_its_limits() -> None:
    assert schema.OPTION_NAMES == (
        "apply_mask",
        "return_multiple_masks",
        "max_masks",
        "include_scores",
        "include_boxes",
        "sync_mode",
        "output_format",
    )
    max_masks = schema.OPTIONS_BY_NAME["max_masks"]
    assert (max_masks.minimum, max_masks.maximum, max_masks.default) == (1, 32, 3)
    assert [value for value, _label in schema.OPTIONS_BY_NAME["output_format"].choices] == [
        "png",
        "jpeg",
        "webp",
    ]
    # sam3web's forms start with scores and boxes on (the viewer draws them).
    assert schema.OPTIONS_BY_NAME["include_scores"].initial is True


def test_points_and_boxes_are_kept_and_image_url_is_left_to_the_caller() -> None:
    data = {
        "image_url": "https://example.com/cat.jpg",
        "prompt": "",
        "point_prompts": [{"x": 1, "y": 2, "label": 0, "object_id": 4}],
        "box_prompts": [{"x_min": 0, "y_min": 0, "x_max": 451, "y_max": 300}],
    }
    cleaned = validate_input(data, image_size=(451, 300))
    assert cleaned["point_prompts"] == [{"x": 1, "y": 2, "label": 0, "object_id": 4}]
    assert cleaned["box_prompts"] == [{"x_min": 0, "y_min": 0, "x_max": 451, "y_max": 300}]
    assert "image_url" not in cleaned


def test_text_prompt_is_the_deprecated_alias_of_prompt() -> None:
    assert validate_input({"text_prompt": "dog"})["prompt"] == "dog"
    assert issues({"prompt": "cat", "text_prompt": "dog"}) == [
        (("input", "prompt"), "prompt and its deprecated alias text_prompt differ.")
    ]


def test_a_run_needs_some_prompt_unless_told_otherwise() -> None:
    assert issues({}) == [(("input", "prompt"), schema.NEEDS_A_PROMPT)]
    # Runflow itself takes it (and segments "wheel"): the stand-in does not require one.
    assert validate_input({}, require_prompt=False)["prompt"] == ""


def test_errors_name_the_field_path_and_read_as_sentences() -> None:
    found = issues(
        {
            "prompt": "cat",
            "max_masks": 33,
            "apply_mask": "yes",
            "output_format": "gif",
            "point_prompts": [{"x": 1, "y": 2, "label": 1}, {"x": 1, "y": 2, "label": 2}],
            "colour": "red",
        }
    )
    assert found == [
        (("input", "colour"), "input has no field colour."),
        (("input", "apply_mask"), 'apply_mask must be true or false, not "yes".'),
        (("input", "max_masks"), "max_masks must be less than or equal to 32 (got 33)."),
        (("input", "output_format"), 'output_format must be one of png, jpeg, webp, not "gif".'),
        (
            ("input", "point_prompts", 1, "label"),
            "Point 2: label must be 1 (include) or 0 (exclude), not 2.",
        ),
    ]
    with pytest.raises(SchemaError) as info:
        validate_input({"max_masks": 0, "prompt": "x"})
    assert info.value.issues[0].as_dict() == {
        "loc": ["input", "max_masks"],
        "msg": "max_masks must be greater than or equal to 1 (got 0).",
        "type": "greater_than_equal",
    }
    assert info.value.by_field() == {"max_masks": [info.value.issues[0].msg]}


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "whole number, not true"),
        ("3", 'whole number, not "3"'),
        (1.5, "whole number, not 1.5"),
        (None, "whole number, not null"),
        (-1, "must not be negative"),
        (1e300, "far too large"),
        (10**20, "far too large"),
        (float("nan"), "whole number"),
    ],
)
def test_coordinates_are_whole_numbers_a_person_could_mean(value: Any, fragment: str) -> None:
    [(loc, msg)] = issues({"point_prompts": [{"x": value, "y": 2, "label": 1}]})
    assert loc == ("input", "point_prompts", 0, "x")
    assert fragment in msg


def test_whole_numbers_written_as_floats_are_taken_as_pydantic_does() -> None:
    cleaned = validate_input(
        {"point_prompts": [{"x": 3.0, "y": 2, "label": 1.0}], "max_masks": 5.0}
    )
    assert cleaned["point_prompts"] == [{"x": 3, "y": 2, "label": 1}]
    assert cleaned["max_masks"] == 5 and isinstance(cleaned["max_masks"], int)


@pytest.mark.parametrize(
    ("points", "loc", "msg"),
    [
        ('[{"x": 1}]', ("input", "point_prompts"), "Give a JSON list of points, like"),
        (["1,1"], ("input", "point_prompts", 0), "Point 1 must be an object"),
        ([{"x": 1, "label": 1}], ("input", "point_prompts", 0, "y"), "Point 1 is missing y."),
        (
            [{"x": 1, "y": 1, "label": 1, "z": 0, "a": 1}],
            ("input", "point_prompts", 0, "a"),
            "Point 1 has unknown keys: a, z.",
        ),
        (
            [{"x": 1, "y": 1, "label": 1, "object_id": 64}],
            ("input", "point_prompts", 0, "object_id"),
            "object_id must be between 0 and 63 (got 64)",
        ),
        (
            [{"x": 1, "y": 1, "label": 1}] * 101,
            ("input", "point_prompts"),
            "At most 100 points per run (got 101).",
        ),
    ],
)
def test_bad_points(points: Any, loc: tuple[str | int, ...], msg: str) -> None:
    [(found_loc, found_msg)] = issues({"point_prompts": points})
    assert found_loc == loc and msg in found_msg


def test_bad_boxes() -> None:
    assert issues({"box_prompts": [{"x_min": 5, "y_min": 9, "x_max": 5, "y_max": 1}]}) == [
        (("input", "box_prompts", 0), "Box 1: x_min must be less than x_max."),
        (("input", "box_prompts", 0), "Box 1: y_min must be less than y_max."),
    ]
    assert "At most 50 boxes" in issues({"box_prompts": [{}] * 51})[0][1]


def test_points_and_boxes_must_lie_inside_the_image_as_the_person_sees_it() -> None:
    found = issues(
        {
            "point_prompts": [{"x": 450, "y": 299, "label": 1}, {"x": 451, "y": 2, "label": 1}],
            "box_prompts": [
                {"x_min": 0, "y_min": 0, "x_max": 451, "y_max": 300},  # reaches the far edge
                {"x_min": 1, "y_min": 2, "x_max": 4, "y_max": 301},
            ],
        },
        image_size=(451, 300),
    )
    assert found == [
        (
            ("input", "point_prompts", 1),
            "Point 2 (451, 2) is outside the image, which is 451×300 (x 0–450, y 0–299).",
        ),
        (("input", "box_prompts", 1), "Box 2 reaches outside the image, which is 451×300 pixels."),
    ]
    # Without the image's size only the shapes are checked.
    assert validate_input({"point_prompts": [{"x": 9999, "y": 0, "label": 1}]})


def test_a_broken_point_does_not_also_say_a_prompt_is_missing() -> None:
    assert locs({"point_prompts": "nonsense"}) == [("input", "point_prompts")]


def test_an_input_that_is_not_an_object() -> None:
    assert issues(["cat"]) == [(("input",), "input must be a JSON object.")]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([1], "must be a JSON object"),
        ({f"k{i}": i for i in range(33)}, "At most 32 metadata keys"),
        ({"x" * 65: 1}, "1 to 64 characters"),
        ({"a": {"b": 1}}, "must be flat"),
        ({"k": "x" * 501}, "longer than 500"),
        ({"k": float("inf")}, "finite number"),
        ({f"k{i}": "v" * 400 for i in range(20)}, "at most 4096 bytes"),
    ],
)
def test_metadata_limits(value: Any, fragment: str) -> None:
    with pytest.raises(SchemaError) as info:
        schema.clean_metadata(value)
    assert info.value.first().loc == ("metadata",)
    assert fragment in info.value.first().msg


def test_a_body_as_runflow_takes_it() -> None:
    body = {
        "input": {"image_url": "data:image/png;base64,AAAA", "prompt": "cat"},
        "callback_url": "https://example.com/hook",
        "metadata": {"a": [1]},  # Runflow takes any object; sam3web's limits are its own
        "client_ref": "x" * 255,
    }
    cleaned = validate_body(body)
    assert cleaned["input"]["image_url"] == "data:image/png;base64,AAAA"
    assert cleaned["input"]["max_masks"] == 3


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ([], ("body",)),
        ({}, ("input",)),
        ({"input": {"prompt": "cat"}}, ("input", "image_url")),
        ({"input": {"image_url": 7}}, ("input", "image_url")),
        ({"input": {"image_url": "x"}, "webhook": "https://x"}, ("webhook",)),
        ({"input": {"image_url": "x"}, "callback_url": "ftp://x"}, ("callback_url",)),
        ({"input": {"image_url": "x"}, "callback_url": "https://" + "a" * 2000}, ("callback_url",)),
        ({"input": {"image_url": "x"}, "client_ref": "x" * 256}, ("client_ref",)),
        ({"input": {"image_url": "x"}, "client_ref": 5}, ("client_ref",)),
        ({"input": {"image_url": "x"}, "metadata": ["a"]}, ("metadata",)),
    ],
)
def test_bad_bodies(body: Any, loc: tuple[str | int, ...]) -> None:
    with pytest.raises(SchemaError) as info:
        validate_body(body)
    assert loc in [issue.loc for issue in info.value.issues]


def test_the_schema_needs_no_django() -> None:
    # The stand-in validates through it as a plain program: importing it must not need Django.
    import subprocess
    import sys

    code = "import sys, segmentation.schema; sys.exit('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
