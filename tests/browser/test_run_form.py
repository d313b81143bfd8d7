"""The new-run form around the prompt editor, in Debian's Chromium through Playwright: what the
image area says before and after an image, Back after Submit (with and without the browser's
back/forward cache), a double click on Submit, getting images in by dropping and pasting, files
the server would refuse caught before drawing, zoom and pan on a large photo, the tools'
shortcuts, and the options' defaults."""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pillow_heif
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from playwright.sync_api import expect

from segmentation.imaging.decode import ImageRejected
from segmentation.imaging.intake import intake_upload
from segmentation.models import Run
from tests.browser.helpers import CHROMIUM, SHOTS, shot, sign_in
from tests.browser.test_editor import (
    choose,
    drag,
    expected_point,
    field,
    geometry,
    image_xy,
    markers,
    ready,
    screen,
)
from tests.image_server import ImageServer
from tests.sample_images import BAD, IMAGES

pytestmark = pytest.mark.django_db(transaction=True)

PLACEHOLDER = "Choose an image file or paste its URL to draw points and boxes on it."
ALREADY = "This form was already submitted: here is the run it made."
LARGE = "large-4032x3024.jpg"


# --- helpers -------------------------------------------------------------------------------


def placeholder(pg) -> Any:
    return pg.locator('#prompt-editor [data-role="placeholder"]')


def refusal(pg) -> Any:
    return pg.locator("#image-refusal")


def chosen(pg) -> list[str]:
    """The names of the files in the image field."""
    return pg.evaluate("[...document.getElementById('id_image').files].map((f) => f.name)")


def submit(pg) -> None:
    pg.get_by_role("button", name="Submit run").click()
    pg.wait_for_url("**/runs/*/")


def server_says(path: Path) -> str:
    """What the server answers when this file is uploaded."""
    with pytest.raises(ImageRejected) as refused:
        intake_upload(SimpleUploadedFile(path.name, path.read_bytes()))
    return refused.value.message


def transfer(pg, paths: Sequence[Path] = (), text: str | None = None) -> Any:
    """A DataTransfer in the page holding real File objects made from these files' bytes (and
    this text as text/plain)."""
    files = [
        {
            "name": p.name,
            "type": mimetypes.guess_type(p.name)[0] or "",
            "data": base64.b64encode(p.read_bytes()).decode(),
        }
        for p in paths
    ]
    return pg.evaluate_handle(
        """([files, text]) => {
          const list = new DataTransfer();
          for (const f of files) {
            const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
            list.items.add(new File([bytes], f.name, { type: f.type }));
          }
          if (text !== null) list.setData("text/plain", text);
          return list;
        }""",
        [files, text],
    )


def drop(pg, paths: list[Path], at: str = ".pe-cols") -> None:
    """Files dragged over the form (the drop target shows) and dropped on it."""
    data = transfer(pg, paths)
    pg.dispatch_event(at, "dragenter", {"dataTransfer": data})
    pg.dispatch_event(at, "dragover", {"dataTransfer": data})
    expect(pg.locator(".rf-drop")).to_be_visible()
    pg.dispatch_event(at, "drop", {"dataTransfer": data})
    expect(pg.locator(".rf-drop")).to_be_hidden()


def paste(pg, paths: Sequence[Path] = (), text: str | None = None) -> None:
    """Ctrl+V with these files (or this text) on the clipboard, wherever the focus is."""
    data = transfer(pg, paths, text)
    pg.evaluate(
        """(data) => (document.activeElement || document.body).dispatchEvent(
          new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }))""",
        data,
    )


def zoom_level(pg) -> int:
    return int(pg.locator('[data-role="zoom"]').inner_text().rstrip("%"))


def view_of(pg) -> tuple[dict[str, float], dict[str, float]]:
    """The stage (what shows) and the image (all of it, zoomed) on screen."""
    pg.locator(".pe-stage").scroll_into_view_if_needed()
    return pg.locator(".pe-stage").bounding_box(), pg.locator(".pe-stage img").bounding_box()


def posts_to_the_form(pg) -> list[str]:
    """The form's POSTs as the browser sends them. (Playwright tells of a request a little
    after it left: look once the page has settled, see settle().)"""
    posts: list[str] = []

    def seen(request: Any) -> None:
        if request.method == "POST" and "/runs/new/" in request.url:
            posts.append(request.url)

    pg.on("request", seen)
    return posts


def settle(pg) -> None:
    # Not "networkidle": a run page under way keeps a long poll open, so the network is never
    # idle there. A POST the page would still send leaves well within half a second.
    pg.wait_for_load_state("load")
    pg.wait_for_timeout(500)


@pytest.fixture
def cached_page(browser, live_server, owner) -> Iterator[Any]:
    """A signed-in page in a Chromium that keeps pages in its back/forward cache, as people's
    browsers do (Playwright's own launch switches it off)."""
    chromium = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
        ignore_default_args=["--disable-back-forward-cache"],
    )
    try:
        pg = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
        pg.set_default_timeout(15_000)
        pg.add_init_script(
            "window.__shown = []; addEventListener('pageshow', (e) => __shown.push(e.persisted));"
        )
        sign_in(pg, f"{live_server.url}/runs/new/")
        yield pg
    finally:
        chromium.close()


# --- what the image area says ---------------------------------------------------------------


def test_before_any_image_the_editor_invites_one(page, page_errors) -> None:
    ready(page)
    expect(placeholder(page)).to_have_text(PLACEHOLDER)
    assert "unavailable" not in page.locator("#prompt-editor").inner_text()
    assert page_errors == []


def test_after_a_refused_upload_the_editor_invites_another(page) -> None:
    # A truncated JPEG looks right to the browser: only the server finds it damaged.
    ready(page)
    page.get_by_label("Image", exact=True).set_input_files(str(BAD / "truncated.jpg"))
    page.get_by_label("Text prompt").fill("cat")
    page.get_by_role("button", name="Submit run").click()
    page.locator("#field-image ul.field-errors").wait_for()
    ready(page)
    expect(placeholder(page)).to_have_text(PLACEHOLDER)
    assert Run.objects.count() == 0


def test_a_url_the_browser_cannot_show_says_so(page) -> None:
    ready(page)
    page.get_by_label("or image URL").fill("http://127.0.0.1:9/cat.jpg")
    expect(placeholder(page)).to_have_text("Preview unavailable; the server will fetch it.")
    page.get_by_label("or image URL").fill("")
    expect(placeholder(page)).to_have_text(PLACEHOLDER)


# --- Back after Submit ----------------------------------------------------------------------


def test_back_after_submit_the_editor_draws_and_submit_again_leads_to_the_first_run(
    page,  # noqa: F811
    page_errors,
) -> None:
    choose(page, "cat.jpg")
    page.get_by_label("Text prompt").fill("cat")
    page.mouse.click(*screen(geometry(page)[0], 0.3, 0.4))
    submit(page)
    first = Run.objects.get()

    page.go_back()
    ready(page)
    # Loaded afresh, with the file and the prompts put back by the browser: the editor shows
    # them and draws on.
    page.locator(".pe-stage img").wait_for(state="visible")
    expect(page.locator(".pe-stage svg .pe-pt")).to_have_count(1)
    page.mouse.click(*screen(geometry(page)[0], 0.6, 0.6))
    assert markers(page) == (2, 0)
    assert len(field(page, "point_prompts")) == 2

    page.get_by_role("button", name="Submit run").click()
    page.wait_for_url(f"**/runs/{first.pk}/")
    expect(page.get_by_text(ALREADY)).to_be_visible()
    assert Run.objects.count() == 1
    assert page_errors == []


def test_back_from_the_back_forward_cache_the_editor_draws_and_submit_works_again(
    cached_page,
) -> None:
    pg = cached_page
    choose(pg, "cat.jpg")
    pg.get_by_label("Text prompt").fill("cat")
    pg.mouse.click(*screen(geometry(pg)[0], 0.3, 0.4))
    submit(pg)
    first = Run.objects.get()

    pg.go_back(wait_until="commit")
    pg.wait_for_function("window.__shown.length === 2")
    assert pg.evaluate("window.__shown") == [False, True], "not restored from the cache"
    # The page as it was left, and Submit given back (it was disabled while submitting).
    submit_button = pg.get_by_role("button", name="Submit run")
    expect(submit_button).to_be_enabled()
    assert markers(pg) == (1, 0)
    pg.mouse.click(*screen(geometry(pg)[0], 0.7, 0.5))
    assert markers(pg) == (2, 0)
    submit_button.click()
    pg.wait_for_url(f"**/runs/{first.pk}/")
    expect(pg.get_by_text(ALREADY)).to_be_visible()
    assert Run.objects.count() == 1


def test_a_double_click_on_submit_sends_the_form_once(page) -> None:
    posts = posts_to_the_form(page)
    choose(page, "cat.jpg")
    page.get_by_label("Text prompt").fill("cat")
    page.get_by_role("button", name="Submit run").dblclick()
    page.wait_for_url("**/runs/*/")
    settle(page)
    assert len(posts) == 1
    assert Run.objects.count() == 1


def test_back_and_forward_and_back_again_keep_the_editor_working(page, page_errors) -> None:
    choose(page, "coffee.jpg")
    page.get_by_label("Text prompt").fill("cup")
    submit(page)
    run_url = page.url

    page.go_back()
    page.locator(".pe-stage img").wait_for(state="visible")
    page.mouse.click(*screen(geometry(page)[0], 0.5, 0.5))
    assert markers(page) == (1, 0)
    page.go_forward()
    assert page.url == run_url
    page.go_back()
    ready(page)
    page.locator(".pe-stage img").wait_for(state="visible")
    expect(page.locator(".pe-stage svg .pe-pt")).to_have_count(1)  # the point drawn before
    page.mouse.click(*screen(geometry(page)[0], 0.2, 0.2))
    assert markers(page) == (2, 0)
    expect(page.get_by_role("button", name="Submit run")).to_be_enabled()
    assert page_errors == []


# --- getting images in ----------------------------------------------------------------------


def test_an_image_dropped_on_the_form_is_the_image(page, page_errors) -> None:
    ready(page)
    page.get_by_label("or image URL").fill("https://example.com/not-this-one.jpg")
    drop(page, [IMAGES / "coffee.jpg"], at="#id_prompt")  # anywhere on the form
    page.locator(".pe-stage img").wait_for(state="visible")
    assert geometry(page)[1:] == (600, 400)
    assert chosen(page) == ["coffee.jpg"]
    # The form takes a file or a URL: the newest choice wins.
    assert page.get_by_label("or image URL").input_value() == ""
    page.mouse.click(*screen(geometry(page)[0], 0.5, 0.5))
    page.get_by_label("Text prompt").fill("cup")
    submit(page)
    assert Run.objects.get().image.original_name == "coffee.jpg"
    assert page_errors == []


def test_an_image_pasted_is_the_image(page) -> None:
    ready(page)
    paste(page, [IMAGES / "horse.png"])
    page.locator(".pe-stage img").wait_for(state="visible")
    assert geometry(page)[1:] == (400, 328)
    assert chosen(page) == ["horse.png"]
    expect(refusal(page)).to_be_hidden()


def test_a_pasted_link_to_an_image_fills_the_url_field_and_shows_it(page) -> None:
    choose(page, "cat.jpg")
    with ImageServer() as server:
        link = server.url("/images/coffee.jpg")
        paste(page, text=f"  {link}\n")
        expect(page.get_by_label("or image URL")).to_have_value(link)
        expect(page.locator(".pe-stage img")).to_have_attribute("src", link)
        page.wait_for_function("document.querySelector('.pe-stage img').naturalWidth === 600")
        assert chosen(page) == []  # the file chosen before gave way


def test_text_that_is_neither_an_image_nor_a_link_changes_nothing(page) -> None:
    choose(page, "cat.jpg")
    paste(page, text="a cat on a mat")
    expect(refusal(page)).to_have_text(
        "What you pasted is neither an image nor a link to one: copy an image, or an image URL "
        "such as https://example.com/photo.jpg."
    )
    assert chosen(page) == ["cat.jpg"]
    assert page.get_by_label("or image URL").input_value() == ""
    assert geometry(page)[1:] == (451, 300)
    # Into a text field, text is the browser's own paste: nothing to say.
    page.get_by_label("Text prompt").focus()
    paste(page, text="a cat on a mat")
    expect(refusal(page)).to_have_text(
        "What you pasted is neither an image nor a link to one: copy an image, or an image URL "
        "such as https://example.com/photo.jpg."
    )  # still the earlier message, no other
    # The next good choice clears it.
    page.get_by_label("Image", exact=True).set_input_files(str(IMAGES / "coffee.jpg"))
    expect(refusal(page)).to_be_hidden()


def test_twenty_files_dropped_on_the_form_change_nothing(page) -> None:
    choose(page, "cat.jpg")
    drop(page, [IMAGES / "coffee.jpg"] * 20)
    expect(refusal(page)).to_have_text(
        "This form takes one image, and 20 files were dropped. For many images, submit this "
        "run, then use “Same prompts on other images” on its page."
    )
    assert chosen(page) == ["cat.jpg"]
    assert geometry(page)[1:] == (451, 300)


@pytest.mark.parametrize(
    "name",
    [
        "empty.jpg",
        "not-an-image.jpg",
        "html-as-png.png",
        "script.svg",
        "huge-header-only.png",
        "bomb-30000x30000.png",
    ],
)
def test_a_file_the_server_would_refuse_is_refused_at_once_in_its_words(page, name: str) -> None:
    posts = posts_to_the_form(page)
    ready(page)
    page.get_by_label("Image", exact=True).set_input_files(str(BAD / name))
    expect(refusal(page)).to_have_text(server_says(BAD / name))
    # Nothing is drawn on, and nothing would be sent.
    assert chosen(page) == []
    expect(placeholder(page)).to_have_text(PLACEHOLDER)
    expect(page.locator("#field-image")).to_have_class("field has-error")
    assert page.get_by_label("Image", exact=True).get_attribute("aria-invalid") == "true"
    settle(page)
    assert posts == []


def test_a_file_over_the_size_limit_is_refused_and_a_dropped_one_changes_nothing(
    page, settings
) -> None:
    settings.SAM3WEB_MAX_IMAGE_BYTES = 50_000  # the live server reads it for each page
    page.reload()
    choose(page, "cat.jpg")  # 38,702 bytes
    drop(page, [IMAGES / "coffee.jpg"])  # 79,975 bytes
    expect(refusal(page)).to_have_text(server_says(IMAGES / "coffee.jpg"))
    assert "50,000 bytes" in refusal(page).inner_text()
    assert chosen(page) == ["cat.jpg"]
    assert geometry(page)[1:] == (451, 300)


def test_a_file_named_like_another_kind_is_judged_by_its_bytes(page, tmp_path) -> None:
    renamed = tmp_path / "photo.jpg"
    renamed.write_bytes((IMAGES / "horse.png").read_bytes())  # a PNG called .jpg
    ready(page)
    paste(page, [renamed])
    page.locator(".pe-stage img").wait_for(state="visible")
    assert geometry(page)[1:] == (400, 328)
    assert chosen(page) == ["photo.jpg"]
    expect(refusal(page)).to_be_hidden()


@pytest.mark.parametrize("kind", ["TIFF", "HEIF"])
def test_a_tiff_or_heic_photo_is_taken_and_runs_with_a_text_prompt(page, tmp_path, kind) -> None:
    """Chromium cannot show either: the editor says so instead of refusing the file, and the
    server takes it in, converted."""
    pillow_heif.register_heif_opener()
    photo = tmp_path / ("site.tif" if kind == "TIFF" else "site.heic")
    Image.new("RGB", (64, 48), (200, 120, 40)).save(photo, kind)
    ready(page)
    page.get_by_label("Image", exact=True).set_input_files(str(photo))
    expect(placeholder(page)).to_contain_text("This browser cannot show this file")
    expect(refusal(page)).to_be_hidden()
    assert chosen(page) == [photo.name]
    page.get_by_label("Text prompt").fill("rust")
    submit(page)
    run = Run.objects.select_related("image").latest("created_at")
    assert (run.image.width, run.image.height, run.image.converted) == (64, 48, True)


# --- zoom and pan ---------------------------------------------------------------------------


def test_zoomed_in_on_a_12_megapixel_photo_a_point_lands_on_its_pixel(page, page_errors) -> None:
    choose(page, LARGE)
    stage, image = view_of(page)
    assert (image["width"], image["height"]) == pytest.approx((stage["width"], stage["height"]))
    fit_level = zoom_level(page)
    # Wheel up over a spot of the photo: it zooms about that spot, to 8 screen pixels a pixel.
    spot = (round(stage["x"] + 0.3 * stage["width"]), round(stage["y"] + 0.6 * stage["height"]))
    wanted = image_xy((image, 4032, 3024), *spot)  # the photo's point under the pointer
    page.mouse.move(*spot)
    for _ in range(12):
        page.mouse.wheel(0, -400)
    expect(page.locator('[data-role="zoom"]')).to_have_text("800%")
    assert fit_level < 25
    stage, image = view_of(page)
    assert image["width"] == pytest.approx(4032 * 8, rel=0.01)
    page.mouse.click(*spot)
    [point] = field(page, "point_prompts")
    # The pixel under the pointer, where it was before zooming (one screen pixel was then
    # more than one image pixel: within one), and exactly as the zoomed image says.
    assert abs(point["x"] - wanted[0]) <= 1 and abs(point["y"] - wanted[1]) <= 1, (point, wanted)
    assert point == expected_point((image, 4032, 3024), *spot, 1)
    shot(page, "run-form-zoomed-1280")

    # Hold Space and drag: the photo moves with the pointer, the point with the photo.
    page.keyboard.down(" ")
    drag(page, spot, (spot[0] - 150, spot[1] - 90))
    page.keyboard.up(" ")
    assert len(field(page, "point_prompts")) == 1  # a pan, not a box or a point
    moved = page.locator(".pe-stage img").bounding_box()
    assert (moved["x"] - image["x"], moved["y"] - image["y"]) == pytest.approx((-150, -90), abs=1)
    dot = page.locator(".pe-stage svg .pe-pt circle").bounding_box()
    centre = (dot["x"] + dot["width"] / 2, dot["y"] + dot["height"] / 2)
    # (The marker is at its pixel's centre: within half a pixel, 4 screen pixels, of the click.)
    assert centre == pytest.approx((spot[0] - 150, spot[1] - 90), abs=4.5)

    # The Pan tool (H) drags the same way; then a point placed after panning is right too.
    page.keyboard.press("h")
    drag(page, spot, (spot[0] + 60, spot[1] + 40))
    page.keyboard.press("i")
    image = page.locator(".pe-stage img").bounding_box()
    other = (spot[0] + 100, spot[1] - 50)
    page.mouse.click(*other)
    assert field(page, "point_prompts")[1] == expected_point((image, 4032, 3024), *other, 1)

    # Out with − and 0 (Fit), in again with +: the points stay on their pixels.
    page.get_by_role("button", name="Zoom out").click()
    assert zoom_level(page) < 800
    page.keyboard.press("0")
    assert zoom_level(page) == fit_level
    expect(page.get_by_role("button", name="Fit")).to_be_disabled()
    page.get_by_role("button", name="Zoom in").click()
    assert zoom_level(page) > fit_level
    stage, image = view_of(page)
    first = page.locator(".pe-stage svg .pe-pt circle").first.bounding_box()
    sx = image["x"] + (point["x"] + 0.5) / 4032 * image["width"]
    assert abs(first["x"] + first["width"] / 2 - sx) < 1.5
    assert page_errors == []


def test_on_a_phone_two_fingers_zoom_and_one_finger_draws(browser, live_server, owner) -> None:
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
    )
    pg = ctx.new_page()
    try:
        sign_in(pg, f"{live_server.url}/runs/new/")
        choose(pg, LARGE)
        stage, _ = view_of(pg)
        fit_level = zoom_level(pg)
        # Real touches, through Chromium's own input: two fingers spread apart across the photo.
        touch = pg.context.new_cdp_session(pg)
        cx, cy = stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2

        def fingers(kind: str, gap: float) -> None:
            points = [{"x": cx - gap, "y": cy, "id": 1}, {"x": cx + gap, "y": cy, "id": 2}]
            touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

        fingers("touchStart", 20)
        for gap in range(30, 130, 10):
            fingers("touchMove", gap)
        touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        assert zoom_level(pg) > 3 * fit_level
        assert field(pg, "point_prompts") == []  # a pinch is not a prompt
        # One finger, after: a point, on the pixel under it.
        stage, image = view_of(pg)
        tap = (round(stage["x"] + 0.3 * stage["width"]), round(stage["y"] + 0.7 * stage["height"]))
        pg.touchscreen.tap(*tap)
        assert field(pg, "point_prompts") == [expected_point((image, 4032, 3024), *tap, 1)]
    finally:
        ctx.close()


def test_keys_choose_the_tools_and_esc_cancels_a_box(page) -> None:
    choose(page, "cat.jpg")
    box, _, _ = geo = geometry(page)

    def tool() -> str:
        return page.locator(".pe-tool[aria-pressed=true]").get_attribute("data-tool")

    for key, name in [("e", "exclude"), ("b", "box"), ("h", "pan"), ("i", "include")]:
        page.keyboard.press(key)
        assert tool() == name
    titles = page.locator(".pe-tool").evaluate_all("(bs) => bs.map((b) => b.title)")
    assert titles == [
        "Include point (I)",
        "Exclude point (E, or shift-click)",
        "Box (B)",
        "Pan: drag to move the zoomed image (H, or hold Space)",
    ]
    expect(page.locator("#pe-shortcuts")).to_be_visible()
    expect(page.locator("#pe-shortcuts")).to_contain_text("I include · E exclude · B box")

    # In a text field a letter is a letter.
    page.get_by_label("Text prompt").press("b")
    assert tool() == "include" and page.get_by_label("Text prompt").input_value() == "b"

    # E then a click: an exclude point.
    page.locator("h1").click()
    page.keyboard.press("e")
    at = screen(box, 0.4, 0.4)
    page.mouse.click(*at)
    assert field(page, "point_prompts") == [expected_point(geo, *at, 0)]

    # Esc while drawing a box: no box.
    page.keyboard.press("b")
    page.mouse.move(*screen(box, 0.1, 0.1))
    page.mouse.down()
    page.mouse.move(*screen(box, 0.5, 0.5), steps=4)
    assert page.locator(".pe-preview").count() == 1
    page.keyboard.press("Escape")
    page.mouse.up()
    assert field(page, "box_prompts") == []
    assert markers(page) == (1, 0)
    expect(page.locator(".pe-status")).to_have_text("Box cancelled.")

    # Esc lets go of an entry picked out in the list.
    page.get_by_role("button", name="Delete point 1", exact=False).focus()
    assert page.locator(".pe-stage svg .is-hl").count() == 1
    page.keyboard.press("Escape")
    assert page.locator(".pe-stage svg .is-hl").count() == 0
    assert page.evaluate("document.activeElement === document.body")


# --- options ----------------------------------------------------------------------------------


def test_several_masks_by_default_and_max_masks_waits_on_them(page, page_errors) -> None:
    ready(page)
    multiple = page.get_by_label("Return multiple masks")
    most = page.get_by_label("Max masks")
    reason = page.locator("#max-masks-off")
    expect(multiple).to_be_checked()
    expect(most).to_be_enabled()
    expect(reason).to_be_hidden()

    multiple.uncheck()
    expect(most).to_be_disabled()
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("Turn on “Return multiple masks”")
    multiple.check()
    expect(most).to_be_enabled()
    multiple.uncheck()
    shot(page, "run-form-one-mask-1280")

    # Folded: the JSON, the advanced options (each with a line of plain English), metadata.
    for summary in ("Edit as JSON", "Advanced", "Metadata"):
        assert page.locator("summary").get_by_text(summary, exact=True).is_visible()
    expect(page.get_by_label("Sync mode")).to_be_hidden()
    page.locator("summary").get_by_text("Advanced", exact=True).click()
    expect(page.get_by_label("Sync mode")).to_be_visible()
    helps = page.locator("#advanced .help").all_inner_texts()
    assert len(helps) == 3 and all(len(h) > 20 for h in helps), helps

    # With several masks off, the run stores what the form did before: max_masks as shown.
    choose(page, "cat.jpg")
    page.get_by_label("Text prompt").fill("cat")
    submit(page)
    assert Run.objects.get().input == {
        "prompt": "cat",
        "apply_mask": True,
        "return_multiple_masks": False,
        "max_masks": 3,
        "include_scores": True,
        "include_boxes": True,
        "sync_mode": False,
        "output_format": "png",
    }
    assert page_errors == []


def test_a_run_with_several_masks_sends_its_max(page, worker, standin) -> None:
    choose(page, "coins.png")
    page.get_by_label("Text prompt").fill("coin")
    page.get_by_label("Max masks").fill("6")
    submit(page)
    page.get_by_text("Queued at Runflow").wait_for()
    sent = standin.create_calls()[0].json["input"]
    assert (sent["return_multiple_masks"], sent["max_masks"]) == (True, 6)


# --- how it looks ----------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_screenshots_of_the_form(browser, live_server, owner, width: int, height: int) -> None:
    phone = width < 600
    ctx = browser.new_context(
        viewport={"width": width, "height": height}, has_touch=phone, is_mobile=phone
    )
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        sign_in(pg, f"{live_server.url}/runs/new/")
        ready(pg)
        shot(pg, f"run-form-empty-{width}")

        data = transfer(pg, [IMAGES / "coffee.jpg"])
        pg.dispatch_event(".pe-cols", "dragenter", {"dataTransfer": data})
        expect(pg.locator(".rf-drop")).to_be_visible()
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"run-form-drop-{width}.png"))  # what the person sees
        pg.dispatch_event(".pe-cols", "dragleave", {"dataTransfer": data})
        expect(pg.locator(".rf-drop")).to_be_hidden()

        pg.get_by_label("Image", exact=True).set_input_files(str(BAD / "script.svg"))
        expect(refusal(pg)).to_be_visible()
        shot(pg, f"run-form-refused-{width}")

        choose(pg, LARGE)
        pg.get_by_label("Text prompt").fill("cup")
        box = geometry(pg)[0]
        if phone:
            pg.touchscreen.tap(*screen(box, 0.45, 0.55))
        else:
            pg.mouse.click(*screen(box, 0.45, 0.55))
            pg.keyboard.down("Shift")
            pg.mouse.click(*screen(box, 0.8, 0.3))
            pg.keyboard.up("Shift")
            drag(pg, screen(box, 0.2, 0.2), screen(box, 0.6, 0.8))
        shot(pg, f"run-form-prompts-{width}")

        for _ in range(3):
            pg.get_by_role("button", name="Zoom in").click()
        shot(pg, f"run-form-zoomed-{width}")
        assert pg.evaluate("document.documentElement.scrollWidth") <= width
        assert errors == []
    finally:
        ctx.close()
