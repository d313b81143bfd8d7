"""The prompt editor on the new-run page, in Debian's Chromium through Playwright: points and
boxes drawn on the image land in the JSON fields in pixels of the image as the person sees it,
reach Runflow, and come back on the run page, prefilled forms and forms shown again."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from segmentation.models import Run
from tests.browser.helpers import new_page, shot
from tests.factories import stored_image
from tests.sample_images import IMAGES

pytestmark = pytest.mark.django_db(transaction=True)


# --- helpers -------------------------------------------------------------------------------


def ready(pg) -> None:
    pg.locator("#prompt-editor[data-ready]").wait_for(state="attached")


def choose(pg, name: str) -> None:
    ready(pg)
    pg.get_by_label("Image", exact=True).set_input_files(str(IMAGES / name))
    pg.locator(".pe-stage img").wait_for(state="visible")


def geometry(pg) -> tuple[dict[str, float], int, int]:
    """The image's box on screen and its natural size (EXIF orientation applied)."""
    img = pg.locator(".pe-stage img")
    img.scroll_into_view_if_needed()  # mouse positions are in the viewport
    w, h = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    return img.bounding_box(), w, h


def screen(box: dict[str, float], fx: float, fy: float) -> tuple[int, int]:
    """A whole screen pixel at a fraction of the image's box."""
    return round(box["x"] + fx * box["width"]), round(box["y"] + fy * box["height"])


def image_xy(geo, sx: float, sy: float) -> tuple[float, float]:
    box, w, h = geo
    u = min(max((sx - box["x"]) / box["width"] * w, 0), w)
    v = min(max((sy - box["y"]) / box["height"] * h, 0), h)
    return u, v


def expected_point(geo, sx: int, sy: int, label: int) -> dict[str, int]:
    _, w, h = geo
    u, v = image_xy(geo, sx, sy)
    return {"x": min(math.floor(u), w - 1), "y": min(math.floor(v), h - 1), "label": label}


def expected_box(geo, a: tuple[int, int], b: tuple[int, int]) -> dict[str, int]:
    """The whole pixels the dragged rectangle covers."""
    (u0, v0), (u1, v1) = image_xy(geo, *a), image_xy(geo, *b)
    x_min, y_min = math.floor(min(u0, u1)), math.floor(min(v0, v1))
    return {
        "x_min": x_min,
        "y_min": y_min,
        "x_max": max(math.ceil(max(u0, u1)), x_min + 1),
        "y_max": max(math.ceil(max(v0, v1)), y_min + 1),
    }


def drag(pg, a: tuple[int, int], b: tuple[int, int]) -> None:
    pg.mouse.move(*a)
    pg.mouse.down()
    pg.mouse.move((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, steps=4)
    pg.mouse.move(*b, steps=4)
    pg.mouse.up()


def shift_click(pg, at: tuple[int, int]) -> None:
    pg.keyboard.down("Shift")
    pg.mouse.click(*at)
    pg.keyboard.up("Shift")


def field(pg, name: str) -> list[dict[str, Any]]:
    text = pg.locator(f"#id_{name}").input_value()
    return json.loads(text) if text.strip() else []


def list_items(pg) -> list[str]:
    return pg.locator(".pe-item .pe-text").all_inner_texts()


def markers(pg) -> tuple[int, int]:
    """Points and boxes drawn over the image."""
    overlay = pg.locator(".pe-stage svg")
    return overlay.locator(".pe-pt").count(), overlay.locator(".pe-box").count()


# --- the tests ---------------------------------------------------------------------------


def test_draw_two_points_and_a_box_then_submit(page, worker, standin) -> None:  # noqa: F811
    choose(page, "cat.jpg")
    geo = geometry(page)
    box, w, h = geo
    assert (w, h) == (451, 300)
    include, exclude = screen(box, 0.31, 0.42), screen(box, 0.72, 0.63)
    a, b = screen(box, 0.12, 0.1), screen(box, 0.55, 0.83)
    page.mouse.click(*include)
    shift_click(page, exclude)
    drag(page, a, b)

    points = [expected_point(geo, *include, 1), expected_point(geo, *exclude, 0)]
    boxes = [expected_box(geo, a, b)]
    assert field(page, "point_prompts") == points
    assert field(page, "box_prompts") == boxes  # one object: no object_id
    assert markers(page) == (2, 1)
    assert list_items(page) == [
        f"Point 1: include ({points[0]['x']}, {points[0]['y']})",
        f"Point 2: exclude ({points[1]['x']}, {points[1]['y']})",
        f"Box 1: ({boxes[0]['x_min']}, {boxes[0]['y_min']}) to "
        f"({boxes[0]['x_max']}, {boxes[0]['y_max']})",
    ]
    shot(page, "editor-1280")

    page.get_by_role("button", name="Submit run").click()
    page.wait_for_url("**/runs/*/")
    page.get_by_text("Queued at Runflow").wait_for()
    sent = standin.create_calls()[0].json["input"]
    assert sent["point_prompts"] == points
    assert sent["box_prompts"] == boxes
    assert page.locator("svg circle.pt.pos").count() == 1
    assert page.locator("svg circle.pt.neg").count() == 1
    assert page.locator("svg rect.box").count() == 1
    p = points[0]
    assert page.get_by_text(f"+ ({p['x']}, {p['y']})").count() == 1


def test_a_box_on_an_exif_rotated_photo_is_in_the_frame_the_person_sees(
    page,  # noqa: F811
    worker,  # noqa: F811
    standin,
) -> None:
    standin.complete_after = 0.3
    choose(page, "cat-exif-rotated.jpg")
    geo = geometry(page)
    box, w, h = geo
    assert (w, h) == (300, 451)  # stored 451×300, seen upright
    assert box["height"] > box["width"]
    a, b = screen(box, 0.2, 0.08), screen(box, 0.8, 0.45)
    drag(page, a, b)
    drawn = expected_box(geo, a, b)
    assert drawn["y_max"] <= h // 2  # the top half of the portrait
    assert field(page, "box_prompts") == [drawn]
    shot(page, "editor-exif")

    page.get_by_role("button", name="Submit run").click()
    page.wait_for_url("**/runs/*/")
    # The server took the box (no "outside the image"), and the result comes back by polling.
    page.get_by_text("1 instance found").wait_for(timeout=30_000)
    run = Run.objects.get()
    assert (run.image.width, run.image.height) == (300, 451)
    assert run.input["box_prompts"] == [drawn]
    # The stand-in draws the mask inside the box it was given: the box found is the one drawn.
    cell = page.locator("table.instances tbody tr td").nth(2).inner_text()
    found = [int(n) for n in re.findall(r"\d+", cell)]
    want = [drawn["x_min"], drawn["y_min"], drawn["x_max"], drawn["y_max"]]
    assert all(abs(f - e) <= 3 for f, e in zip(found, want, strict=True)), (found, want)
    shot(page, "editor-exif-result")


def test_undo_redo_and_clear_with_the_keyboard_and_delete_from_the_list(page) -> None:  # noqa: F811
    errors: list[Any] = []
    page.on("pageerror", lambda error: errors.append(error))
    page.reload()  # to hear the script start, too
    choose(page, "cat.jpg")
    box, _, _ = geometry(page)
    for fx in (0.2, 0.4, 0.6):
        page.mouse.click(*screen(box, fx, 0.5))
    three = field(page, "point_prompts")
    assert len(three) == 3

    page.keyboard.press("Control+z")
    assert field(page, "point_prompts") == three[:2]
    page.keyboard.press("Control+Shift+z")
    assert field(page, "point_prompts") == three
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+y")
    assert field(page, "point_prompts") == three
    assert markers(page) == (3, 0)

    page.get_by_role("button", name="Clear all").click()
    assert page.locator("#id_point_prompts").input_value() == ""
    assert markers(page) == (0, 0)
    assert page.get_by_text("None yet").is_visible()
    page.keyboard.press("Control+z")
    assert field(page, "point_prompts") == three

    # A text field keeps its own undo: Ctrl+Z there is not the editor's.
    page.get_by_label("Text prompt").fill("cat")
    page.get_by_label("Text prompt").press("Control+z")
    assert field(page, "point_prompts") == three

    # Delete the second point from the list, with the keyboard only.
    second = three[1]
    delete = page.get_by_role(
        "button", name=f"Delete point 2: include ({second['x']}, {second['y']})"
    )
    delete.focus()
    page.keyboard.press("Enter")
    assert field(page, "point_prompts") == [three[0], three[2]]
    assert markers(page) == (2, 0)
    # Focus moved to the entry that took its place, so Enter again deletes the next one.
    focused = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert focused == f"Delete point 2: include ({three[2]['x']}, {three[2]['y']})"
    page.keyboard.press("Enter")
    assert field(page, "point_prompts") == [three[0]]
    page.keyboard.press("Enter")  # the last one: focus goes to the list's heading
    assert page.locator("#id_point_prompts").input_value() == ""
    assert page.evaluate("document.activeElement.id") == "pe-list-title"
    assert errors == []


def test_objects_group_prompts_with_object_ids(page) -> None:  # noqa: F811
    choose(page, "cat.jpg")
    geo = geometry(page)
    box = geo[0]
    first = screen(box, 0.3, 0.3)
    page.mouse.click(*first)
    assert "object_id" not in field(page, "point_prompts")[0]

    # A second object: what was drawn so far becomes Object 1's (object_id 0).
    page.get_by_role("button", name="New object").click()
    assert page.get_by_label("Object", exact=True).input_value() == "1"
    a, b = screen(box, 0.5, 0.2), screen(box, 0.9, 0.9)
    drag(page, a, b)
    page.get_by_label("Object", exact=True).select_option(label="Object 1")
    page.get_by_role("button", name="Exclude point").click()
    assert page.get_by_role("button", name="Exclude point").get_attribute("aria-pressed") == "true"
    second = screen(box, 0.1, 0.8)
    page.mouse.click(*second)

    assert field(page, "point_prompts") == [
        {**expected_point(geo, *first, 1), "object_id": 0},
        {**expected_point(geo, *second, 0), "object_id": 0},
    ]
    assert field(page, "box_prompts") == [{**expected_box(geo, a, b), "object_id": 1}]
    assert [t.rsplit(" · ", 1)[-1] for t in list_items(page)] == [
        "Object 1",
        "Object 1",
        "Object 2",
    ]
    assert page.locator(".pe-stage svg .pe-tag").all_text_contents() == ["Object 2"]
    shot(page, "editor-objects")

    # Markers stay on their pixels when the window (and so the image) changes size.
    def centre_fraction() -> tuple[float, float]:
        img = page.locator(".pe-stage img").bounding_box()
        dot = page.locator(".pe-stage svg .pe-pt circle").first.bounding_box()
        return (
            (dot["x"] + dot["width"] / 2 - img["x"]) / img["width"],
            (dot["y"] + dot["height"] / 2 - img["y"]) / img["height"],
        )

    before = centre_fraction()
    width = page.locator(".pe-stage img").bounding_box()["width"]
    page.set_viewport_size({"width": 800, "height": 900})
    page.wait_for_function(
        f"document.querySelector('.pe-stage img').getBoundingClientRect().width != {width}"
    )
    after = centre_fraction()
    assert abs(after[0] - before[0]) < 0.01 and abs(after[1] - before[1]) < 0.01

    # Clear all goes back to one object, and to JSON without object_id.
    page.get_by_role("button", name="Clear all").click()
    page.get_by_role("button", name="Include point").click()
    # A wobble of a few pixels is still a click, not a box.
    x, y = screen(geometry(page)[0], 0.5, 0.5)
    drag(page, (x, y), (x + 2, y + 2))
    assert markers(page) == (1, 0)
    assert "object_id" not in field(page, "point_prompts")[0]
    assert page.get_by_label("Object", exact=True).locator("option").count() == 1


def test_json_typed_by_hand_shows_on_the_image(page) -> None:  # noqa: F811
    choose(page, "cat.jpg")
    # Folded while empty: the editor draws them.
    assert page.get_by_label("Point prompts").is_hidden()
    page.get_by_text("Edit as JSON").click()
    page.get_by_label("Point prompts").fill('[{"x": 10, "y": 20, "label": 0, "object_id": 2}]')
    page.get_by_label("Box prompts").fill('[{"x_min": 5, "y_min": 6, "x_max": 70, "y_max": 80}]')
    page.get_by_label("Text prompt").click()  # leaving the field
    expect(page.locator(".pe-item")).to_have_count(2)
    assert markers(page) == (1, 1)
    assert list_items(page)[0] == "Point 1: exclude (10, 20) · Object 3"
    assert page.get_by_label("Object", exact=True).locator("option").count() == 3
    # Broken JSON is left as typed; the editor says so and draws nothing into it.
    page.get_by_label("Point prompts").fill('[{"x": 1,')
    page.get_by_label("Text prompt").click()
    expect(page.get_by_text("The point JSON below is not valid JSON.")).to_be_visible()
    box = geometry(page)[0]
    page.mouse.click(*screen(box, 0.5, 0.5))
    expect(page.get_by_role("status")).to_contain_text("Fix it, or Clear all, to draw points.")
    # Boxes can still be drawn, and the broken points stay as typed.
    drag(page, screen(box, 0.5, 0.5), screen(box, 0.7, 0.7))
    assert len(field(page, "box_prompts")) == 2
    assert page.locator("#id_point_prompts").input_value() == '[{"x": 1,'
    # A URL the browser cannot show still leaves the JSON usable.
    page.get_by_label("Image", exact=True).set_input_files([])
    page.get_by_label("or image URL").fill("http://127.0.0.1:9/cat.jpg")
    page.get_by_text("Preview unavailable; the server will fetch it.").wait_for()
    assert list_items(page)[0].startswith("Box 1")
    assert markers(page) == (0, 0)  # nothing to draw on, nothing lost


def test_a_prefilled_run_shows_its_prompts(page, owner, live_server) -> None:  # noqa: F811
    image = stored_image("coffee.jpg")
    run = Run.objects.create(
        owner=owner,
        image=image,
        input={
            "prompt": "cup",
            "max_masks": 3,
            "point_prompts": [{"x": 300, "y": 200, "label": 1}, {"x": 40, "y": 50, "label": 0}],
            "box_prompts": [{"x_min": 150, "y_min": 100, "x_max": 450, "y_max": 330}],
        },
    )
    page.goto(f"{live_server.url}/runs/new/?from={run.pk}")
    ready(page)
    page.locator(".pe-stage img").wait_for(state="visible")
    assert geometry(page)[1:] == (600, 400)
    assert markers(page) == (2, 1)
    assert list_items(page)[0] == "Point 1: include (300, 200)"
    # The include point sits at (300.5, 200.5) of 600×400: the middle of the image.
    img = page.locator(".pe-stage img").bounding_box()
    dot = page.locator(".pe-stage svg .pe-pt.pos circle").bounding_box()
    cx = dot["x"] + dot["width"] / 2
    assert abs(cx - (img["x"] + 300.5 / 600 * img["width"])) < 1.5
    shot(page, "editor-prefilled")


def test_a_form_shown_again_with_an_error_keeps_the_markers(page) -> None:  # noqa: F811
    choose(page, "cat.jpg")
    geo = geometry(page)
    point = screen(geo[0], 0.5, 0.5)
    # A drag that ends past the image's corner stops at its edges.
    a, b = screen(geo[0], 0.6, 0.1), screen(geo[0], 1.1, 1.05)
    page.mouse.click(*point)
    drag(page, a, b)
    assert field(page, "box_prompts")[0]["x_max"] == 451
    assert field(page, "box_prompts")[0]["y_max"] == 300
    page.get_by_label("Max masks").fill("99")
    page.get_by_role("button", name="Submit run").click()
    page.locator("#field-max_masks .field-errors").wait_for()
    ready(page)
    page.locator(".pe-stage img").wait_for(state="visible")
    assert markers(page) == (1, 1)
    assert field(page, "point_prompts") == [expected_point(geo, *point, 1)]
    assert field(page, "box_prompts") == [expected_box(geo, a, b)]
    # The staged image is drawn on like a chosen one.
    page.mouse.click(*screen(geometry(page)[0], 0.8, 0.8))
    assert markers(page) == (2, 1)
    shot(page, "editor-form-error")


def test_at_phone_width_a_finger_draws(browser, live_server, owner) -> None:  # noqa: F811
    ctx, pg = new_page(
        browser,
        f"{live_server.url}/runs/new/",
        viewport={"width": 390, "height": 844},
        has_touch=True,
        is_mobile=True,
    )
    try:
        choose(pg, "cat.jpg")
        geo = geometry(pg)
        box = geo[0]
        assert box["width"] <= 390
        tap = screen(box, 0.4, 0.5)
        pg.touchscreen.tap(*tap)
        assert field(pg, "point_prompts") == [expected_point(geo, *tap, 1)]
        assert markers(pg) == (1, 0)
        # Nothing wider than the phone.
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        shot(pg, "editor-390")
    finally:
        ctx.close()


def test_without_javascript_the_json_fields_are_the_way_in(browser, live_server, owner) -> None:  # noqa: F811
    ctx, pg = new_page(browser, f"{live_server.url}/runs/new/", java_script_enabled=False)
    try:
        assert pg.locator("#prompt-editor").is_hidden()
        assert pg.locator("#pe-list-wrap").is_hidden()
        pg.get_by_label("Image", exact=True).set_input_files(str(IMAGES / "cat.jpg"))
        pg.get_by_label("Point prompts").fill('[{"x": 225, "y": 150, "label": 1}]')
        pg.get_by_role("button", name="Submit run").click()
        pg.wait_for_url("**/runs/*/")
        assert Run.objects.get().input["point_prompts"] == [{"x": 225, "y": 150, "label": 1}]
    finally:
        ctx.close()


def test_edit_and_rerun_adds_a_negative_point_to_a_linked_run(
    page,  # noqa: F811
    worker,  # noqa: F811
    standin,
    live_server,
) -> None:
    """From a run's page: Edit as a new run, shift-click one more exclude point, submit; the
    new run has the old prompts plus the new one, the same image, and links to its parent."""
    choose(page, "coffee.jpg")
    page.get_by_label("Text prompt").fill("cup")
    geo = geometry(page)
    page.mouse.click(*screen(geo[0], 0.5, 0.5))
    page.get_by_role("button", name="Submit run").click()
    page.get_by_text("Queued at Runflow").wait_for()
    parent = Run.objects.get()

    page.get_by_role("link", name="Edit as a new run").click()
    page.wait_for_url(f"**/runs/new/?from={parent.pk}")
    page.locator(".pe-stage img").wait_for(state="visible")
    assert markers(page) == (1, 0)
    geo = geometry(page)
    extra = screen(geo[0], 0.1, 0.9)
    shift_click(page, extra)
    assert markers(page) == (2, 0)
    page.get_by_role("button", name="Submit run").click()
    page.wait_for_url("**/runs/*/")
    page.get_by_text("Queued at Runflow").wait_for()

    child = Run.objects.exclude(pk=parent.pk).get()
    assert child.parent == parent and child.image_id == parent.image_id
    assert child.prompt == "cup"
    assert child.points == [*parent.points, expected_point(geo, *extra, 0)]
    assert page.get_by_role("link", name="an earlier run").count() == 1
    assert [c.json["input"]["point_prompts"] for c in standin.create_calls()] == [
        parent.points,
        child.points,
    ]
