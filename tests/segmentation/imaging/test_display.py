"""The display copy of a stored image (imaging.display, and store_image / display_file in
imaging.store): made for large images, at most SAM3WEB_DISPLAY_SIZE on its long side, WebP for
photos and PNG where there is transparency, never for small images."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image, ImageChops, ImageStat

from segmentation.imaging.display import fit, needs_display, render_display
from segmentation.imaging.intake import intake_bytes
from segmentation.imaging.store import display_file, store_image
from segmentation.models import SourceImage
from tests.factories import colour_at, decode_image, encode_image, image_bytes, stored_image

LARGE = "large-4032x3024.jpg"


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """The mean absolute difference per channel (0-255) of two images of the same size."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def media_files() -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_the_12_mp_photo_gets_a_webp_copy_at_display_size() -> None:
    data = image_bytes(LARGE)
    copy = render_display(data, 2048)
    assert copy is not None
    assert (copy.content_type, copy.extension) == ("image/webp", "webp")
    # The JPEG decoded at half its size is the copy: 2016×1512, no resampling of 12 MP.
    assert (copy.width, copy.height) == (2016, 1512)
    im = decode_image(copy.data)
    assert im.format == "WEBP" and im.size == (2016, 1512)
    assert len(copy.data) < len(data) / 4
    # The same picture: compared with the original scaled down to the same size.
    original = decode_image(data).resize(im.size, Image.Resampling.LANCZOS)
    assert mean_difference(im, original) < 4


@pytest.mark.parametrize("name", ["cat.jpg", "coins.png", "rocket.webp", "camera-gray.png"])
def test_images_already_small_enough_get_no_copy(name: str) -> None:
    assert render_display(image_bytes(name), 2048) is None
    assert render_display(image_bytes(LARGE), 0) is None  # copies turned off


def test_the_long_side_is_at_most_the_limit_whatever_the_shape() -> None:
    tall = encode_image(Image.linear_gradient("L").resize((300, 1100)).convert("RGB"), "PNG")
    copy = render_display(tall, 512)
    assert copy is not None and (copy.width, copy.height) == fit(300, 1100, 512) == (140, 512)
    assert decode_image(copy.data).size == (140, 512)
    # A JPEG with no reduced scale close under the limit: decoded larger, then resampled.
    wide = encode_image(Image.new("RGB", (1500, 700), (10, 120, 200)), "JPEG", quality=90)
    copy = render_display(wide, 1000)
    assert copy is not None and (copy.width, copy.height) == (1000, 467)
    assert needs_display(1001, 10, 1000) and not needs_display(1000, 1000, 1000)


def test_transparency_is_kept_in_a_png_copy() -> None:
    copy = render_display(image_bytes("coffee-rgba.png"), 300)
    assert copy is not None and copy.content_type == "image/png"
    im = decode_image(copy.data)
    assert im.mode == "RGBA" and im.size == (300, 200)
    # The see-through strip across the middle (rows 180-220 of 400) is still see-through.
    assert colour_at(im, (150, 100))[3] == 0 and colour_at(im, (150, 20))[3] == 255
    # A palette PNG with a transparent entry: PNG too, with real alpha.
    palette = Image.new("P", (900, 600), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 450, 600))
    copy = render_display(encode_image(palette, "PNG", transparency=0), 300)
    assert copy is not None and copy.content_type == "image/png"
    im = decode_image(copy.data).convert("RGBA")
    assert colour_at(im, (10, 10)) == (0, 0, 255, 255) and colour_at(im, (290, 10))[3] == 0


def test_the_copy_is_upright_as_the_original_is_seen() -> None:
    """A JPEG whose EXIF says "turn me" (stored as it came, had it needed no other change):
    the copy is turned, so it lies over the original as browsers show it."""
    im = Image.new("RGB", (1200, 600), (250, 250, 250))
    im.paste((200, 0, 0), (0, 0, 200, 600))  # red on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    copy = render_display(encode_image(im, "JPEG", quality=95, exif=exif), 400)
    assert copy is not None and (copy.width, copy.height) == (200, 400)
    seen = decode_image(copy.data).convert("RGB")
    assert seen.size == (200, 400)
    r, g, b = colour_at(seen, (100, 10))  # the stored left edge is now at the top
    assert r > 150 and g < 80 and b < 80


@pytest.mark.django_db
def test_storing_a_large_image_makes_its_copy_and_a_small_one_does_not() -> None:
    large = stored_image(LARGE)
    name = large.display.name or ""
    assert name.startswith("display/") and name.endswith(".webp")
    with large.display.open("rb") as f:
        assert Image.open(f).size == (2016, 1512)
    assert (large.width, large.height) == (4032, 3024)  # coordinates stay the original's
    assert display_file(large) == (large.display, "image/webp")
    small = stored_image("cat.jpg")
    assert not small.display
    assert display_file(small) == (small.file, "image/jpeg")
    # The same photo again is the same stored image: no second copy.
    again = store_image(intake_bytes(image_bytes(LARGE)), original_name="again.jpg")
    assert again.pk == large.pk
    assert len([n for n in media_files() if n.startswith("display/")]) == 1


@pytest.mark.django_db
def test_an_image_stored_before_copies_gets_its_copy_on_first_request(settings) -> None:
    settings.SAM3WEB_DISPLAY_SIZE = 0  # as stored before display copies existed
    image = stored_image(LARGE)
    assert not image.display
    settings.SAM3WEB_DISPLAY_SIZE = 2048
    # Two first requests at once: each makes a copy, the first recorded wins, the other
    # removes its own file.
    first, second = SourceImage.objects.get(pk=image.pk), SourceImage.objects.get(pk=image.pk)
    made, content_type = display_file(first)
    assert content_type == "image/webp" and (made.name or "").startswith("display/")
    theirs, _ = display_file(second)
    assert theirs.name == made.name
    assert SourceImage.objects.get(pk=image.pk).display.name == made.name
    assert [n for n in media_files() if n.startswith("display/")] == [made.name]
    with made.open("rb") as f:
        assert Image.open(io.BytesIO(f.read())).size == (2016, 1512)


@pytest.mark.django_db
def test_a_copy_that_cannot_be_made_shows_the_original(settings) -> None:
    settings.SAM3WEB_DISPLAY_SIZE = 0
    image = stored_image(LARGE)
    settings.SAM3WEB_DISPLAY_SIZE = 2048
    image.file.storage.delete(image.file.name or "")  # the file went missing
    file, content_type = display_file(image)
    assert (file, content_type) == (image.file, "image/jpeg")
    assert not SourceImage.objects.get(pk=image.pk).display
