"""The run form, through real POSTs to /runs/new/: every bad input gets a message beside its
field, a 400, and leaves no run behind."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from django.test import Client

from segmentation.models import Run, SourceImage
from tests.factories import field_errors, form_data, make_run, png_bytes, upload
from tests.sample_images import IMAGES

pytestmark = pytest.mark.django_db

URL = "/runs/new/"


def assert_refused(response, field: str, fragment: str) -> None:
    assert response.status_code == 400
    errors = field_errors(response, field)
    assert any(fragment in e for e in errors), f"{fragment!r} not in {errors}"
    assert Run.objects.count() == 0


def test_the_form_shows_every_schema_field_with_useful_defaults(signed_in: Client) -> None:
    response = signed_in.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    for name in (
        "image",
        "image_url",
        "prompt",
        "text_prompt",
        "point_prompts",
        "box_prompts",
        "apply_mask",
        "return_multiple_masks",
        "max_masks",
        "include_scores",
        "include_boxes",
        "sync_mode",
        "output_format",
        "metadata",
    ):
        assert f'name="{name}"' in html, name
    assert re.search(r'name="include_scores"[^>]*checked', html)
    assert re.search(r'name="include_boxes"[^>]*checked', html)
    # Several masks: a text concept finds every instance (Runflow's own default is one).
    assert re.search(r'name="return_multiple_masks"[^>]*checked', html)
    assert not re.search(r'name="sync_mode"[^>]*checked', html)
    assert 'value="3"' in html  # max_masks


def test_it_stores_a_valid_run(signed_in: Client, owner) -> None:
    points = [{"x": 100, "y": 120, "label": 1}, {"x": 10, "y": 10, "label": 0, "object_id": 2}]
    boxes = [{"x_min": 50, "y_min": 40, "x_max": 400, "y_max": 290, "object_id": 2}]
    response = signed_in.post(
        URL,
        form_data(
            point_prompts=json.dumps(points),
            box_prompts=json.dumps(boxes),
            metadata='{"project": "demo", "n": 3}',
            return_multiple_masks="on",
            max_masks="5",
            output_format="webp",
        ),
    )
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.id}/"
    assert run.owner == owner
    assert run.status == Run.Status.PENDING
    assert run.input == {
        "prompt": "cat",
        "apply_mask": True,
        "return_multiple_masks": True,
        "max_masks": 5,
        "include_scores": True,
        "include_boxes": True,
        "sync_mode": False,
        "output_format": "webp",
        "point_prompts": points,
        "box_prompts": boxes,
    }
    assert run.metadata == {"project": "demo", "n": 3}
    assert (run.image.width, run.image.height) == (451, 300)
    assert run.image.file.read() == (IMAGES / "cat.jpg").read_bytes()


def test_text_prompt_is_an_alias_of_prompt(signed_in: Client) -> None:
    signed_in.post(URL, form_data(prompt="", text_prompt="whiskers"))
    assert Run.objects.get().input["prompt"] == "whiskers"


def test_prompt_and_a_different_alias_are_refused(signed_in: Client) -> None:
    response = signed_in.post(URL, form_data(prompt="cat", text_prompt="dog"))
    assert_refused(response, "prompt", "differ")


def test_a_run_needs_some_prompt_so_runflow_never_segments_wheels(signed_in: Client) -> None:
    response = signed_in.post(URL, form_data(prompt="   "))
    assert_refused(response, "prompt", "at least one")


def test_points_alone_are_enough(signed_in: Client) -> None:
    response = signed_in.post(
        URL, form_data(prompt="", point_prompts='[{"x": 5, "y": 5, "label": 1}]')
    )
    assert response.status_code == 302
    assert Run.objects.get().input["prompt"] == ""  # sent explicitly, never left to default


def test_neither_file_nor_url(signed_in: Client) -> None:
    data = form_data()
    del data["image"]
    assert_refused(signed_in.post(URL, data), "image", "Choose an image file or paste")


def test_both_file_and_url(signed_in: Client) -> None:
    response_data = form_data(image=upload("cat.jpg"), image_url="https://example.com/cat.jpg")
    response = signed_in.post(URL, response_data)
    assert_refused(response, "image_url", "either a file or a URL")


@pytest.mark.parametrize("path", sorted((IMAGES / "bad").iterdir()), ids=lambda p: p.name)
def test_every_bad_file_is_refused_beside_the_image_field(signed_in: Client, path) -> None:
    response = signed_in.post(URL, form_data(image=upload(f"bad/{path.name}")))
    assert response.status_code == 400
    errors = field_errors(response, "image")
    assert errors and all(len(e) > 15 for e in errors), errors
    assert Run.objects.count() == 0
    assert SourceImage.objects.count() == 0


def test_a_url_to_a_private_address_is_refused(signed_in: Client) -> None:
    response = signed_in.post(URL, form_data(image=None, image_url="http://127.0.0.1:9/cat.jpg"))
    assert response.status_code == 400
    message = " ".join(field_errors(response, "image_url")).lower()
    assert "private" in message or "local" in message, message
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("[{", "not valid JSON"),
        ('{"x": 1}', "JSON list of points"),
        ("[1, 2]", "Point 1 must be an object"),
        ('[{"x": 1, "y": 2}]', "missing label"),
        ('[{"x": 1, "y": 2, "label": 1, "z": 3}]', "unknown keys: z"),
        ('[{"x": 1.5, "y": 2, "label": 1}]', "whole number"),
        ('[{"x": "1", "y": 2, "label": 1}]', "whole number"),
        ('[{"x": true, "y": 2, "label": 1}]', "whole number"),
        ('[{"x": null, "y": 2, "label": 1}]', "whole number"),
        ('[{"x": -1, "y": 2, "label": 1}]', "must not be negative"),
        ('[{"x": 1e300, "y": 2, "label": 1}]', "far too large"),
        ('[{"x": 99999999999999999999, "y": 2, "label": 1}]', "far too large"),
        ('[{"x": 1, "y": 2, "label": 2}]', "label must be 1"),
        ('[{"x": 1, "y": 2, "label": 1, "object_id": 64}]', "object_id must be between"),
        ('[{"x": 1, "y": 2, "label": 1, "object_id": -3}]', "must not be negative"),
        ('[{"x": 451, "y": 2, "label": 1}]', "outside the image"),
        ('[{"x": 3, "y": 300, "label": 1}]', "outside the image"),
        (json.dumps([{"x": 1, "y": 1, "label": 1}] * 10_000), "At most 100 points"),
    ],
)
def test_bad_point_prompts(signed_in: Client, raw: str, fragment: str) -> None:
    assert_refused(signed_in.post(URL, form_data(point_prompts=raw)), "point_prompts", fragment)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("not json", "not valid JSON"),
        ('[{"x_min": 1, "y_min": 2, "x_max": 3}]', "missing y_max"),
        ('[{"x_min": 10, "y_min": 2, "x_max": 10, "y_max": 5}]', "x_min must be less than x_max"),
        ('[{"x_min": 1, "y_min": 9, "x_max": 10, "y_max": 5}]', "y_min must be less than y_max"),
        ('[{"x_min": 1, "y_min": 2, "x_max": 452, "y_max": 5}]', "outside the image"),
        ('[{"x_min": 1, "y_min": 2, "x_max": 4, "y_max": 301}]', "outside the image"),
        ('[{"x_min": -5, "y_min": 2, "x_max": 4, "y_max": 30}]', "must not be negative"),
        ('[{"x_min": [1], "y_min": 2, "x_max": 4, "y_max": 30}]', "whole number"),
        (json.dumps([{"x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1}] * 51), "At most 50 boxes"),
    ],
)
def test_bad_box_prompts(signed_in: Client, raw: str, fragment: str) -> None:
    assert_refused(signed_in.post(URL, form_data(box_prompts=raw)), "box_prompts", fragment)


def test_a_box_may_reach_the_far_edge(signed_in: Client) -> None:
    box = '[{"x_min": 0, "y_min": 0, "x_max": 451, "y_max": 300}]'
    assert signed_in.post(URL, form_data(box_prompts=box)).status_code == 302


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        ("{bad", "not valid JSON"),
        ('{"a": {"b": 1}}', "must be flat"),
        ('{"a": [1]}', "must be flat"),
        (json.dumps({f"k{i}": i for i in range(33)}), "At most 32 metadata keys"),
        (json.dumps({"k": "x" * 501}), "longer than 500"),
        (json.dumps({"x" * 65: 1}), "1 to 64 characters"),
        (json.dumps({f"k{i}": "v" * 400 for i in range(20)}), "at most 4096 bytes"),
    ],
)
def test_bad_metadata(signed_in: Client, raw: str, fragment: str) -> None:
    assert_refused(signed_in.post(URL, form_data(metadata=raw)), "metadata", fragment)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("max_masks", "0", "greater than or equal to 1"),
        ("max_masks", "33", "less than or equal to 32"),
        ("max_masks", "lots", "whole number"),
        ("output_format", "gif", "Select a valid choice"),
        ("prompt", "x" * 1001, "at most 1000"),
    ],
)
def test_bad_options(signed_in: Client, field: str, value: str, fragment: str) -> None:
    assert_refused(signed_in.post(URL, form_data(**{field: value})), field, fragment)


def test_a_valid_image_survives_an_error_elsewhere(signed_in: Client) -> None:
    """Nothing the person chose is lost: the image is kept and offered again with the form."""
    response = signed_in.post(URL, form_data(image=upload("coffee.jpg"), point_prompts="[{"))
    assert response.status_code == 400
    html = response.content.decode()
    staged = re.search(r'name="staged_image" value="([^"]+)"', html)
    assert staged is not None, "the image is offered again"
    token = staged.group(1)
    assert "coffee.jpg" in html
    assert 'value="cat"' in html  # the prompt as typed
    assert "[{" in html  # the bad JSON as typed, to fix rather than retype

    data = form_data(staged_image=token, point_prompts='[{"x": 599, "y": 399, "label": 1}]')
    del data["image"]
    response = signed_in.post(URL, data)
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.image.original_name == "coffee.jpg"
    assert (run.image.width, run.image.height) == (600, 400)


def test_a_forged_staged_token_is_ignored(signed_in: Client) -> None:
    data = form_data(staged_image="1:forged")
    del data["image"]
    assert_refused(signed_in.post(URL, data), "image", "Choose an image file")


def test_the_same_image_is_stored_once(signed_in: Client) -> None:
    signed_in.post(URL, form_data(image=upload("cat.jpg")))
    signed_in.post(URL, form_data(image=upload("cat.jpg")))
    assert Run.objects.count() == 2
    assert SourceImage.objects.count() == 1


def test_points_are_checked_against_the_image_as_the_person_sees_it(signed_in: Client) -> None:
    # Stored 451x300 with EXIF orientation 6: a person sees a 300x451 portrait.
    ok = '[{"x": 299, "y": 450, "label": 1}]'
    response = signed_in.post(
        URL, form_data(image=upload("cat-exif-rotated.jpg"), point_prompts=ok)
    )
    assert response.status_code == 302
    assert (Run.objects.get().image.width, Run.objects.get().image.height) == (300, 451)
    outside = '[{"x": 400, "y": 10, "label": 1}]'
    response = signed_in.post(
        URL, form_data(image=upload("cat-exif-rotated.jpg"), point_prompts=outside)
    )
    assert response.status_code == 400
    assert "300×451" in " ".join(field_errors(response, "point_prompts"))


def test_the_file_name_does_not_decide(signed_in: Client) -> None:
    # A PNG named .jpg is a PNG; what the name says is ignored.
    response = signed_in.post(URL, form_data(image=upload("photo.jpg", png_bytes(40, 30))))
    assert response.status_code == 302
    assert Run.objects.get().image.content_type == "image/png"


def test_a_post_without_csrf_token_is_refused(owner) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post(URL, form_data())
    assert response.status_code == 403
    assert Run.objects.count() == 0


def test_without_an_api_key_the_form_says_so(signed_in: Client, settings) -> None:
    settings.RUNFLOW_API_KEY = ""
    page = signed_in.get(URL).content.decode()
    assert "Runflow is not configured" in page
    assert "RUNFLOW_API_KEY" in page
    response = signed_in.post(URL, form_data())
    assert response.status_code == 400
    assert "no Runflow API key is configured" in response.content.decode()
    assert Run.objects.count() == 0


def test_an_oversized_form_gets_a_readable_400(signed_in: Client) -> None:
    response = signed_in.post(URL, form_data(metadata="x" * (3 * 1024 * 1024)))
    assert response.status_code == 400
    assert "too large or malformed" in response.content.decode()
    assert Run.objects.count() == 0


def test_an_expired_form_explains_itself(owner) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post(URL, form_data())
    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()


def test_a_form_posted_twice_makes_one_run_and_the_second_answer_leads_to_it(
    signed_in: Client,
) -> None:
    page = signed_in.get(URL)
    key = re.search(r'name="submission_key" value="([0-9a-f]{32})"', page.content.decode())
    assert key, "the form carries no submission key"
    first = signed_in.post(URL, form_data(image=upload("cat.jpg"), submission_key=key.group(1)))
    again = signed_in.post(
        URL, form_data(image=upload("cat.jpg"), submission_key=key.group(1)), follow=True
    )
    run = Run.objects.get()
    assert first["Location"] == f"/runs/{run.pk}/"
    assert again.redirect_chain == [(f"/runs/{run.pk}/", 302)]
    assert "This form was already submitted: here is the run it made." in again.content.decode()
    # A fresh page is a fresh form: the next submit is a run of its own.
    key2 = re.search(
        r'name="submission_key" value="([0-9a-f]{32})"', signed_in.get(URL).content.decode()
    )
    assert key2 and key2.group(1) != key.group(1)
    signed_in.post(URL, form_data(image=upload("cat.jpg"), submission_key=key2.group(1)))
    assert Run.objects.count() == 2


def test_a_form_shown_again_after_an_error_keeps_its_key_and_still_makes_one_run(
    signed_in: Client,
) -> None:
    refused = signed_in.post(URL, form_data(prompt="", submission_key="a" * 32))
    assert refused.status_code == 400
    assert f'name="submission_key" value="{"a" * 32}"' in refused.content.decode()
    signed_in.post(URL, form_data(submission_key="a" * 32))
    signed_in.post(URL, form_data(submission_key="a" * 32))
    assert Run.objects.count() == 1


def test_the_same_key_from_two_teammates_is_two_runs(
    signed_in: Client, teammate_client: Client
) -> None:
    signed_in.post(URL, form_data(submission_key="b" * 32))
    teammate_client.post(URL, form_data(submission_key="b" * 32))
    assert Run.objects.count() == 2


# --- options that wait on another, and what is folded ----------------------------------------


def test_max_masks_left_out_with_one_mask_is_stored_as_the_form_shows_it(
    signed_in: Client,
) -> None:
    """The page disables Max masks while multiple masks is off, and a disabled field is not
    posted: the run is stored as before, with the form's 3."""
    response = signed_in.post(URL, form_data(max_masks=None))
    assert response.status_code == 302
    run = Run.objects.get()
    assert (run.input["return_multiple_masks"], run.input["max_masks"]) == (False, 3)


def test_max_masks_is_needed_with_several_masks(signed_in: Client) -> None:
    response = signed_in.post(URL, form_data(max_masks=None, return_multiple_masks="on"))
    assert_refused(response, "max_masks", "This field is required.")
    response = signed_in.post(URL, form_data(max_masks="", return_multiple_masks="on"))
    assert_refused(response, "max_masks", "This field is required.")


def details(html: str, css_class: str) -> str:
    """The opening tag of the <details> of this class."""
    found = re.search(rf'<details class="{css_class}"[^>]*>', html)
    assert found, css_class
    return found.group(0)


def test_what_is_folded_opens_when_it_holds_something(signed_in: Client, owner) -> None:
    html = signed_in.get(URL).content.decode()
    # The JSON: open for the page without JavaScript, folded by the page's script.
    assert " data-fold" in details(html, "pe-json")
    assert " open" not in details(html, "rf-advanced")
    assert " open" not in details(html, "rf-metadata")

    # Shown again with an error in one of them: that one is open.
    html = signed_in.post(URL, form_data(metadata="{bad")).content.decode()
    assert " open" in details(html, "rf-metadata")
    assert " open" not in details(html, "rf-advanced")
    assert " data-fold" in details(html, "pe-json")
    html = signed_in.post(URL, form_data(box_prompts="[{")).content.decode()
    assert " data-fold" not in details(html, "pe-json")

    # Filled in from a run that used an advanced option, and had points: open, to be seen.
    run = make_run(
        owner,
        input={
            "prompt": "cat",
            "sync_mode": True,
            "point_prompts": [{"x": 1, "y": 2, "label": 1}],
        },
        metadata={"project": "demo"},
    )
    html = signed_in.get(f"{URL}?from={run.pk}").content.decode()
    assert " open" in details(html, "rf-advanced")
    assert " open" in details(html, "rf-metadata")
    assert " data-fold" not in details(html, "pe-json")


def test_the_page_carries_the_servers_image_limits_and_refusals(
    signed_in: Client, settings
) -> None:
    settings.SAM3WEB_MAX_IMAGE_BYTES = 1_234_567
    settings.SAM3WEB_MAX_IMAGE_PIXELS = 12_000_000
    html = signed_in.get(URL).content.decode()
    tag = re.search(r'<input type="file" name="image"[^>]*>', html)
    assert tag, "no image field"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(0)))
    assert attrs["data-max-bytes"] == "1234567"
    assert attrs["data-max-pixels"] == "12000000"
    refusals = json.loads(unescape(attrs["data-refusals"]))
    assert refusals["too_large"] == "This file is larger than the 1.2 MiB limit."
    assert refusals["too_many_pixels"].endswith("the limit is 12 megapixels.")
    assert refusals["empty"] == "This file is empty (0 bytes)."
