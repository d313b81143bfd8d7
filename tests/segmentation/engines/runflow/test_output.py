"""Where the masks are in Runflow's SAM 3 output (engines.runflow.output.parse_output): every
shape seen or guessed, garbage included, and it never raises."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from segmentation.engines.base import EngineOutput, MaskRef
from segmentation.engines.runflow.output import parse_output
from segmentation.imaging.masks import box_to_pixels

# --- parse_output ---------------------------------------------------------------------------------

MODEL_DATA_OUTPUT = {
    "outputs": [
        {"url": "https://cdn.runflow.io/o/preview.png", "type": "image", "width": 640},
        {"url": "https://cdn.runflow.io/o/m0.png", "type": "image"},
    ],
    "model_data": {
        "masks": [
            {"url": "https://cdn.runflow.io/o/m0.png", "content_type": "image/png", "width": 640},
            {"url": "https://cdn.runflow.io/o/m1.png", "content_type": "image/png"},
        ],
        "image": {"url": "https://cdn.runflow.io/o/preview.png", "content_type": "image/png"},
        "scores": [0.93, 0.41],
        "boxes": [[0.5, 0.5, 0.25, 0.5], [0.1, 0.2, 0.1, 0.1]],
        "metadata": [{"index": 0, "score": 0.1, "box": [0, 0, 0, 0]}],  # scores/boxes win
        "prompt": "cat",
    },
    "nsfw_detected": False,
    "timing": {"inference_ms": 812},
}


def test_parse_model_data() -> None:
    parsed = parse_output(MODEL_DATA_OUTPUT)
    assert parsed.found_in == "model_data"
    assert parsed.preview_url == "https://cdn.runflow.io/o/preview.png"
    assert parsed.masks == [
        MaskRef(0, "https://cdn.runflow.io/o/m0.png", 0.93, (0.5, 0.5, 0.25, 0.5)),
        MaskRef(1, "https://cdn.runflow.io/o/m1.png", 0.41, (0.1, 0.2, 0.1, 0.1)),
    ]
    assert parsed.notes == ["metadata has 1 entries for 2 masks"]


def test_parse_top_level_with_bare_urls_and_metadata() -> None:
    parsed = parse_output(
        {
            "masks": ["https://x.test/a.png", "data:image/png;base64,iVBORw0KGgo="],
            "image": "https://x.test/preview.jpg",
            "metadata": [
                {"index": 1, "score": 0.5, "box": [0.2, 0.2, 0.2, 0.2]},
                {"index": 0, "score": 1, "box": [0.5, 0.5, 1, 1]},
            ],
        }
    )
    assert parsed.found_in == "top_level"
    assert parsed.preview_url == "https://x.test/preview.jpg"
    # metadata is matched by its own index, not its position.
    assert parsed.masks == [
        MaskRef(0, "https://x.test/a.png", 1.0, (0.5, 0.5, 1.0, 1.0)),
        MaskRef(1, "data:image/png;base64,iVBORw0KGgo=", 0.5, (0.2, 0.2, 0.2, 0.2)),
    ]
    assert parsed.notes == []


def test_parse_model_data_without_masks_falls_back_to_the_top_level() -> None:
    parsed = parse_output({"model_data": {"prompt": "cat"}, "masks": ["https://x.test/a.png"]})
    assert parsed.found_in == "top_level"
    assert [m.url for m in parsed.masks] == ["https://x.test/a.png"]


def test_parse_one_based_metadata_indexes() -> None:
    parsed = parse_output(
        {"masks": ["https://x.test/a.png", "https://x.test/b.png"],
         "metadata": [{"index": 2, "score": 0.2}, {"index": 1, "score": 0.1}]}
    )  # fmt: skip
    assert [m.score for m in parsed.masks] == [0.1, 0.2]


def test_parse_outputs_with_a_named_preview() -> None:
    parsed = parse_output(
        {
            "outputs": [
                {"url": "https://x.test/0.png", "type": "image", "name": "mask_0"},
                {"url": "https://x.test/p.png", "type": "image", "name": "preview"},
                {"url": "https://x.test/1.png", "type": "image", "name": "mask_1"},
                {"url": "https://x.test/log.txt", "type": "text", "content_type": "text/plain"},
                {"url": "https://x.test/v.mp4", "content_type": "video/mp4"},
                "junk",
            ],
            "model_data": {"scores": [0.7, 0.8]},
        }
    )
    assert parsed.found_in == "outputs"
    assert parsed.preview_url == "https://x.test/p.png"
    assert parsed.masks == [
        MaskRef(0, "https://x.test/0.png", 0.7, None),
        MaskRef(1, "https://x.test/1.png", 0.8, None),
    ]
    assert len(parsed.notes) == 3  # the text entry, the video, the string


def test_parse_outputs_preview_is_the_one_image_not_called_a_mask() -> None:
    parsed = parse_output(
        {
            "outputs": [
                {"url": "https://x.test/s/mask-0.png"},
                {"url": "https://x.test/s/mask-1.png"},
                {"url": "https://x.test/s/result.png"},
            ]
        }
    )
    assert parsed.preview_url == "https://x.test/s/result.png"
    assert [m.url for m in parsed.masks] == [
        "https://x.test/s/mask-0.png",
        "https://x.test/s/mask-1.png",
    ]


def test_parse_outputs_preview_by_count_and_size() -> None:
    """Three images for two scores: the last one, at another size than the masks, is the
    preview. Without scores (no expected count) nothing marks it, and all three are masks."""
    entries = [
        {"url": "https://x.test/a.png", "type": "image", "width": 512, "height": 512},
        {"url": "https://x.test/b.png", "type": "image", "width": 512, "height": 512},
        {"url": "https://x.test/c.png", "type": "image", "width": 451, "height": 300},
    ]
    parsed = parse_output({"outputs": entries, "model_data": {"scores": [0.9, 0.8]}})
    assert parsed.preview_url == "https://x.test/c.png"
    assert [m.score for m in parsed.masks] == [0.9, 0.8]

    parsed = parse_output({"outputs": entries})
    assert parsed.preview_url is None
    assert len(parsed.masks) == 3


def test_parse_outputs_one_extra_image_without_a_hint_is_kept_as_a_mask() -> None:
    entries = [{"url": f"https://x.test/{i}.png", "type": "image"} for i in range(3)]
    parsed = parse_output({"outputs": entries, "scores": [0.1, 0.2]})
    assert parsed.preview_url is None
    assert len(parsed.masks) == 3
    assert any("nothing says which is the preview" in n for n in parsed.notes)


def test_an_empty_masks_list_is_authoritative() -> None:
    """SAM 3 found nothing: outputs[] holds only the preview, which must not become a mask."""
    parsed = parse_output(
        {"model_data": {"masks": [], "image": {"url": "https://x.test/p.png"}},
         "outputs": [{"url": "https://x.test/p.png", "type": "image"}]}
    )  # fmt: skip
    assert (parsed.found_in, parsed.masks, parsed.preview_url) == (
        "model_data",
        [],
        "https://x.test/p.png",
    )


@pytest.mark.parametrize(
    "output",
    [None, [], [{"masks": []}], "masks", "", 42, 3.5, True, b"\x00", {}, {"model_data": None},
     {"model_data": "x", "masks": 5}, {"outputs": "x"}, {"outputs": {}}, {"masks": {"0": "x"}},
     {"model_data": [1, 2]}, {"image": 5}],
)  # fmt: skip
def test_parse_garbage_finds_nothing_and_says_so(output: object) -> None:
    parsed = parse_output(output)
    assert isinstance(parsed, EngineOutput)
    assert parsed.masks == []
    assert parsed.found_in == "none"
    assert parsed.preview_url is None
    assert parsed.notes


def test_parse_bad_items_keep_their_place() -> None:
    parsed = parse_output(
        {"masks": [None, 3, {"url": 5}, {"url": "ftp://x.test/m.png"}, {"no": "url"},
                   "javascript:alert(1)", " https://x.test/ok.png "]}
    )  # fmt: skip
    assert [m.index for m in parsed.masks] == list(range(7))
    assert [m.url for m in parsed.masks] == [None] * 6 + ["https://x.test/ok.png"]
    assert len(parsed.notes) == 6


@pytest.mark.parametrize(
    ("score", "expected"),
    [(0.5, 0.5), (0, 0.0), (1, 1.0), (1.0000001, 1.0), (float("nan"), None), (float("inf"), None),
     (-0.2, None), (1.5, None), (True, None), (False, None), ("0.9", None), (None, None),
     ([0.9], None), (10**400, None)],
)  # fmt: skip
def test_scores_are_validated(score: object, expected: float | None) -> None:
    parsed = parse_output({"masks": ["https://x.test/a.png"], "scores": [score]})
    assert parsed.masks[0].score == expected
    if expected is None and score is not None:
        assert parsed.notes


@pytest.mark.parametrize(
    ("box", "expected"),
    [([0.5, 0.5, 0.2, 0.4], (0.5, 0.5, 0.2, 0.4)), ((0, 0, 1, 1), (0.0, 0.0, 1.0, 1.0)),
     ([1.05, 0.5, 0.2, 0.2], (1.05, 0.5, 0.2, 0.2)),  # past the edge: kept, clamped later
     ([0.5, 0.5, 0.2], None), ([0.5, 0.5, 0.2, 0.2, 0.1], None),
     ([0.5, float("nan"), 0.2, 0.2], None),
     ([0.5, 0.5, True, 0.2], None), (["0.5", 0.5, 0.2, 0.2], None), ([0.5, 0.5, -0.2, 0.2], None),
     ([120, 80, 50, 40], None), ("0.5,0.5,0.2,0.2", None), ({"cx": 0.5}, None), (7, None)],
)  # fmt: skip
def test_boxes_are_validated(box: object, expected: tuple | None) -> None:
    parsed = parse_output(
        {"model_data": {"masks": [{"url": "https://x.test/a.png"}], "boxes": [box]}}
    )
    assert parsed.masks[0].box_norm == expected
    if expected is None:
        assert parsed.notes


def test_parse_a_json_string_and_a_tuple_list() -> None:
    parsed = parse_output('{"masks": ["https://x.test/a.png"], "scores": [0.5]}')
    assert parsed.masks == [MaskRef(0, "https://x.test/a.png", 0.5, None)]
    parsed = parse_output({"masks": ("https://x.test/a.png",), "boxes": ((0.5, 0.5, 1, 1),)})
    assert parsed.masks[0].box_norm == (0.5, 0.5, 1.0, 1.0)


def test_parse_notes_are_capped() -> None:
    parsed = parse_output({"masks": [{"url": i} for i in range(500)]})
    assert len(parsed.masks) == 500
    assert len(parsed.notes) <= 41


def test_parse_self_referencing_and_deep_input() -> None:
    loop: dict = {"masks": []}
    loop["masks"].append(loop)
    loop["model_data"] = loop
    assert parse_output(loop).masks[0].url is None
    deep: object = ["https://x.test/a.png"]
    for _ in range(5000):
        deep = [deep]
    assert parse_output({"masks": deep}).masks[0].url is None


KEYS = st.sampled_from(
    ["model_data", "masks", "outputs", "image", "scores", "boxes", "metadata", "url", "type",
     "content_type", "width", "height", "index", "score", "box", "name", "kind", "mime_type"]
)  # fmt: skip
URLS = st.sampled_from(
    ["https://x.test/m.png", "data:image/png;base64,AAAA", "data:text/plain,hi", "ftp://x", "", " "]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | URLS
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(KEYS | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=60,
)


@hsettings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(JSON)
def test_parse_output_never_raises(output: object) -> None:
    parsed = parse_output(output)
    assert isinstance(parsed, EngineOutput)
    assert parsed.found_in in ("model_data", "top_level", "outputs", "none")
    assert all(isinstance(n, str) for n in parsed.notes)
    assert parsed.preview_url is None or isinstance(parsed.preview_url, str)
    for i, mask in enumerate(parsed.masks):
        assert mask.index == i
        assert mask.url is None or mask.url.split(":", 1)[0].lower() in ("http", "https", "data")
        assert mask.score is None or 0.0 <= mask.score <= 1.0
        if mask.box_norm is not None:
            assert len(mask.box_norm) == 4 and all(math.isfinite(v) for v in mask.box_norm)
            box_to_pixels(mask.box_norm, 640, 480)  # usable as it comes
