"""Reading pixels with their type known: Pillow's ``getpixel()`` answers a number for a one-band
image, a tuple for a multi-band one, and None for an image with no bands, so its result can be
neither indexed nor iterated until the test says which one it expects."""

from __future__ import annotations

from PIL import Image


def colour_at(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The bands of a multi-band image's (RGB, RGBA, ...) pixel at ``xy``."""
    value = im.getpixel(xy)
    assert isinstance(value, tuple), f"a {im.mode} image has no multi-band pixels: {value!r}"
    return value
