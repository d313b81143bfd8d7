"""Drawing masks (imaging.render): the palette, the overlay and the thumbnail."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from PIL import Image, ImageDraw

from segmentation.imaging.masks import ArtifactError, NormalizedMask
from segmentation.imaging.masks import normalize_mask as normalize
from segmentation.imaging.render import PALETTE, colour_for, render_overlay, render_thumbnail
from tests.factories import colour_at, decode_image, encode_image, mask_ellipse
from tests.sample_images import IMAGES

BAD = IMAGES / "bad"


# --- helpers --------------------------------------------------------------------------------------


def normalize_mask(data: bytes, width: int, height: int, *, what: str) -> NormalizedMask:
    return normalize(data, width, height, what=what, provider="Runflow")


# --- palette --------------------------------------------------------------------------------------


def test_palette_is_tab10_in_order() -> None:
    tab10 = "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf".split()  # noqa: SIM905
    assert [tuple(bytes.fromhex(h)) for h in tab10] == PALETTE
    assert colour_for(0) == PALETTE[0] and colour_for(13) == PALETTE[3]


# --- overlay and thumbnail ------------------------------------------------------------------------


def test_overlay_colours_and_transparency() -> None:
    left = Image.new("L", (100, 50), 0)
    ImageDraw.Draw(left).rectangle((0, 0, 59, 49), fill=255)
    right = Image.new("L", (100, 50), 0)
    ImageDraw.Draw(right).rectangle((40, 0, 79, 49), fill=255)
    masks = [normalize_mask(encode_image(im), 100, 50, what="m") for im in (left, right)]
    consumed: list[int] = []

    def stream() -> Iterator[tuple[bytes, tuple[int, int, int]]]:
        for i, mask in enumerate(masks):
            consumed.append(i)
            yield mask.png, PALETTE[i]

    overlay = decode_image(render_overlay(stream(), 100, 50))
    assert consumed == [0, 1]
    assert (overlay.format, overlay.mode, overlay.size) == ("PNG", "RGBA", (100, 50))
    assert overlay.getpixel((10, 10)) == (*PALETTE[0], 128)
    assert overlay.getpixel((50, 10)) == (*PALETTE[1], 128)  # the later mask on top
    assert overlay.getpixel((70, 10)) == (*PALETTE[1], 128)
    assert colour_at(overlay, (90, 10))[3] == 0  # outside every mask: transparent
    assert overlay.getchannel("A").getbbox() == (0, 0, 80, 50)


def test_overlay_alpha_and_a_mask_at_another_size() -> None:
    half = encode_image(
        mask_ellipse((50, 25), (0, 0, 24, 24))
    )  # half size: stretched to the canvas
    overlay = decode_image(render_overlay([(half, (1, 2, 3))], 100, 50, alpha=200))
    assert overlay.getpixel((24, 24)) == (1, 2, 3, 200)
    assert overlay.getpixel((99, 49)) == (0, 0, 0, 0)


def test_empty_overlay_is_transparent() -> None:
    overlay = decode_image(render_overlay(iter(()), 30, 20))
    assert overlay.size == (30, 20) and overlay.getchannel("A").getbbox() is None


def test_thumbnail_of_a_large_photo_with_overlay() -> None:
    photo = (IMAGES / "large-4032x3024.jpg").read_bytes()
    full = Image.new("L", (4032, 3024), 0)
    ImageDraw.Draw(full).rectangle((0, 0, 2015, 3023), fill=255)  # the left half
    mask = normalize_mask(encode_image(full), 4032, 3024, what="m")
    overlay = render_overlay([(mask.png, PALETTE[3])], 4032, 3024)
    started = time.process_time()
    thumb_bytes = render_thumbnail(photo, overlay)
    assert time.process_time() - started < 1.0
    thumb = decode_image(thumb_bytes)
    assert (thumb.format, thumb.mode, thumb.size) == ("JPEG", "RGB", (240, 180))
    plain = decode_image(render_thumbnail(photo, None))
    # Left half: the photo blended half and half with red; right half: the photo untouched.
    # (The tolerance is JPEG's: chroma subsampling smears colour across 2x2 blocks.)
    for x in (30, 60, 100):
        blended = [
            p * 127 / 255 + c * 128 / 255
            for p, c in zip(colour_at(plain, (x, 90)), PALETTE[3], strict=True)
        ]
        assert all(
            abs(a - b) <= 12 for a, b in zip(colour_at(thumb, (x, 90)), blended, strict=True)
        )
    for x in (140, 200):
        assert all(
            abs(a - b) <= 6
            for a, b in zip(colour_at(thumb, (x, 90)), colour_at(plain, (x, 90)), strict=True)
        )


def test_thumbnail_colour_is_the_palette_at_half_alpha() -> None:
    white = encode_image(Image.new("RGB", (400, 300), "white"))
    overlay = render_overlay(
        [(encode_image(Image.new("L", (400, 300), 255)), PALETTE[3])], 400, 300
    )
    thumb = decode_image(render_thumbnail(white, overlay, size=(80, 60)))
    assert thumb.size == (80, 60)
    expected = [round(c * 128 / 255 + 255 * 127 / 255) for c in PALETTE[3]]
    assert all(abs(a - b) <= 4 for a, b in zip(colour_at(thumb, (40, 30)), expected, strict=True))


def test_thumbnail_keeps_aspect_and_follows_exif() -> None:
    thumb = decode_image(render_thumbnail((IMAGES / "cat-exif-rotated.jpg").read_bytes(), None))
    assert thumb.size == (120, 180)  # a portrait, as people see it
    thumb = decode_image(render_thumbnail((IMAGES / "cat.jpg").read_bytes(), None))
    assert thumb.size == (240, 160)
    for name in (
        "coffee-rgba.png",
        "coffee-palette.png",
        "camera-16bit.png",
        "cat-cmyk.jpg",
        "rocket.webp",
        "cat-animated.gif",
    ):
        assert decode_image(render_thumbnail((IMAGES / name).read_bytes(), None)).format == "JPEG"


def test_thumbnail_of_not_an_image() -> None:
    with pytest.raises(ArtifactError) as info:
        render_thumbnail((BAD / "not-an-image.jpg").read_bytes(), None)
    assert info.value.permanent is True
    with pytest.raises(ArtifactError) as info:
        render_thumbnail((BAD / "bomb-30000x30000.png").read_bytes(), None)
    assert info.value.code == "too_many_pixels"
