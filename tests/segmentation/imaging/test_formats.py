"""TIFF and HEIC/HEIF through intake: files made here with Pillow and pillow-heif (and TIFFs
written byte by byte where Pillow cannot write what scanners and microscopes do), decoded by
the real parsers."""

from __future__ import annotations

import io
import struct
from array import array

import pytest
from PIL import AvifImagePlugin, ExifTags, Image, ImageChops, ImageStat

from segmentation.imaging.decode import (
    EXIF_TRANSPOSE,
    MSG_CORRUPT,
    MSG_TIFF_PIXELS,
    ImageRejected,
    open_header,
)
from segmentation.imaging.intake import intake_bytes
from tests.factories import decode_image, encode_image
from tests.sample_images import IMAGES

# A small, asymmetric photo: flips and rotations all give different pixels.
SMALL = Image.open(IMAGES / "cat.jpg").convert("RGB").resize((48, 32))
GRAY = Image.open(IMAGES / "camera-gray.png").resize((64, 64))


def rejected(data: bytes) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        intake_bytes(data)
    return info.value


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    diff = ImageChops.difference(a.convert("RGBA"), b.convert("RGBA"))
    return diff.getbbox(alpha_only=False) is None


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return max(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean)


def exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = value
    return exif.tobytes()


def tiff_file(*pages: dict) -> bytes:
    """A little-endian, uncompressed TIFF of one strip per page. Each page: width, height,
    bits (one per sample), photometric, data, and optionally sample_format (1 unsigned,
    2 signed, 3 float) and extra tags {tag: (type, [values])}."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    next_ifd_at = 4
    for page in pages:
        data_at = len(out)
        out += page["data"] + b"\0" * (len(page["data"]) % 2)
        bits = page["bits"]
        tags = {
            256: (4, [page["width"]]),
            257: (4, [page["height"]]),
            258: (3, list(bits)),
            259: (3, [1]),  # no compression
            262: (3, [page["photometric"]]),
            273: (4, [data_at]),
            277: (3, [len(bits)]),
            278: (4, [page["height"]]),
            279: (4, [len(page["data"])]),
            284: (3, [1]),  # samples interleaved
            339: (3, [page.get("sample_format", 1)] * len(bits)),
            **page.get("extra", {}),
        }
        entries = []
        for tag, (kind, values) in sorted(tags.items()):
            raw = struct.pack("<" + ("H" if kind == 3 else "I") * len(values), *values)
            if len(raw) > 4:  # stored out of line
                at = len(out)
                out += raw + b"\0" * (len(raw) % 2)
                raw = struct.pack("<I", at)
            entries.append(struct.pack("<HHI", tag, kind, len(values)) + raw.ljust(4, b"\0"))
        struct.pack_into("<I", out, next_ifd_at, len(out))
        out += struct.pack("<H", len(entries)) + b"".join(entries)
        next_ifd_at = len(out)
        out += b"\0\0\0\0"
    return bytes(out)


def gray16_page(im: Image.Image, scale: int) -> dict:
    samples = array("H", [v * scale for v in im.tobytes()])
    return {
        "width": im.width,
        "height": im.height,
        "bits": (16,),
        "photometric": 1,
        "data": samples.tobytes(),
    }


# --- TIFF -----------------------------------------------------------------------------------------


def test_an_rgb_tiff_is_stored_as_a_png_with_the_same_pixels() -> None:
    result = intake_bytes(encode_image(SMALL, "TIFF", compression="tiff_lzw"))
    assert (result.source_format, result.content_type, result.extension) == (
        "TIFF",
        "image/png",
        "png",
    )
    assert (result.width, result.height, result.converted) == (48, 32, True)
    assert same_pixels(decode_image(result.data), SMALL)


def test_a_jpeg_compressed_tiff_is_stored_as_a_jpeg() -> None:
    cat = Image.open(IMAGES / "cat.jpg").convert("RGB")
    data = encode_image(cat, "TIFF", compression="jpeg", quality=90)
    result = intake_bytes(data)
    assert (result.content_type, result.converted) == ("image/jpeg", True)
    out = decode_image(result.data)
    assert out.format == "JPEG" and out.size == cat.size
    assert mean_difference(out, decode_image(data)) < 3  # re-encoded at quality 95


def test_a_16_bit_rgb_tiff_keeps_the_high_byte_of_each_sample() -> None:
    # Pillow opens 48-bit RGB as 8-bit RGB; full-range 16-bit samples are what scanners write.
    wide = array("H", [v * 257 for v in SMALL.tobytes()]).tobytes()
    data = tiff_file(
        {"width": 48, "height": 32, "bits": (16, 16, 16), "photometric": 2, "data": wide}
    )
    result = intake_bytes(data)
    out = decode_image(result.data)
    assert (result.content_type, out.mode) == ("image/png", "RGB")
    assert same_pixels(out, SMALL)


@pytest.mark.parametrize("scale", [257, 16])  # full-range 16-bit, and 12-bit data in 16 bits
def test_a_16_bit_gray_tiff_becomes_8_bit_gray_without_losing_its_contrast(scale: int) -> None:
    result = intake_bytes(tiff_file(gray16_page(GRAY, scale)))
    out = decode_image(result.data)
    assert (result.content_type, out.mode, result.converted) == ("image/png", "L", True)
    assert same_pixels(out, GRAY)


def test_a_float_tiff_is_spread_over_8_bits() -> None:
    floats = GRAY.convert("F").point(lambda v: v / 255)  # 0..1, as image tools write floats
    data = encode_image(floats, "TIFF")
    assert decode_image(data).mode == "F"
    out = decode_image(intake_bytes(data).data)
    assert out.mode == "L"
    assert mean_difference(out, GRAY) < 1  # 0..1 scaled back to 0..255, up to rounding


def test_a_cmyk_tiff_becomes_rgb() -> None:
    result = intake_bytes(encode_image(SMALL.convert("CMYK"), "TIFF"))
    out = decode_image(result.data)
    assert (out.format, out.mode) == ("PNG", "RGB")
    assert same_pixels(out, SMALL.convert("CMYK").convert("RGB"))


def test_a_lab_tiff_becomes_rgb_not_rgba() -> None:
    # LAB's bands are L, A and B: the A is a colour axis, not transparency.
    out = decode_image(intake_bytes(encode_image(SMALL.convert("LAB"), "TIFF")).data)
    assert out.mode == "RGB"


def test_a_tiff_with_transparency_keeps_it() -> None:
    rgba = SMALL.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(SMALL.size))
    out = decode_image(intake_bytes(encode_image(rgba, "TIFF")).data)
    assert out.mode == "RGBA" and same_pixels(out, rgba)


def test_a_multi_page_tiff_gives_its_first_page() -> None:
    data = encode_image(SMALL, "TIFF", save_all=True, append_images=[SMALL.rotate(180)] * 2)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    out = decode_image(intake_bytes(data).data)
    assert getattr(out, "n_frames", 1) == 1
    assert same_pixels(out, SMALL)


def test_later_pages_of_a_tiff_are_never_decoded_nor_even_measured() -> None:
    # Page 2 claims 60,000×60,000 pixels and holds 4 bytes: looking at it would refuse the file.
    first = {
        "width": 48,
        "height": 32,
        "bits": (8, 8, 8),
        "photometric": 2,
        "data": SMALL.tobytes(),
    }
    bomb = {"width": 60_000, "height": 60_000, "bits": (8,), "photometric": 1, "data": b"\0" * 4}
    result = intake_bytes(tiff_file(first, bomb))
    assert (result.width, result.height) == (48, 32)
    assert same_pixels(decode_image(result.data), SMALL)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tiff_is_turned_upright_by_its_orientation_tag_exactly_once(orientation: int) -> None:
    data = encode_image(SMALL, "TIFF", tiffinfo={ExifTags.Base.Orientation: orientation})
    result = intake_bytes(data)
    expected = SMALL if orientation == 1 else SMALL.transpose(EXIF_TRANSPOSE[orientation])
    assert (result.width, result.height) == expected.size
    out = decode_image(result.data)
    assert same_pixels(out, expected)
    assert ExifTags.Base.Orientation not in out.getexif()


def test_a_compressed_tiff_with_exif_orientation_is_turned_too() -> None:
    data = encode_image(
        SMALL, "TIFF", compression="tiff_adobe_deflate", exif=exif_with_orientation(6)
    )
    out = decode_image(intake_bytes(data).data)
    assert same_pixels(out, SMALL.transpose(EXIF_TRANSPOSE[6]))


@pytest.mark.parametrize("keep", [8, 40, 200, 2000])  # header, IFD, partway through the pixels
def test_a_truncated_tiff_is_refused_as_damaged(keep: int) -> None:
    data = encode_image(SMALL, "TIFF")
    assert len(data) > 2000
    exc = rejected(data[:keep])
    assert (exc.code, exc.message) == ("corrupt", MSG_CORRUPT)


def test_a_tiff_whose_pixels_point_past_its_end_is_damaged() -> None:
    page = {"width": 48, "height": 32, "bits": (8,), "photometric": 1, "data": b"\x80" * 100}
    assert rejected(tiff_file(page)).code == "corrupt"


def test_a_tiff_bomb_is_refused_from_its_header_with_its_size(settings) -> None:
    # 4 bytes of pixels behind a header claiming 2,000×2,000: decoding it would find it
    # damaged, so being told its size means nothing was decoded.
    settings.SAM3WEB_MAX_IMAGE_PIXELS = 1_000_000
    page = {"width": 2000, "height": 2000, "bits": (8, 8, 8), "photometric": 2, "data": bytes(4)}
    exc = rejected(tiff_file(page))
    assert (exc.code, exc.message) == (
        "too_many_pixels",
        "This image is 2,000×2,000 pixels (4 megapixels); the limit is 1 megapixels.",
    )


def test_a_huge_tiff_bomb_is_refused_by_our_check_not_pillows() -> None:
    page = {
        "width": 60_000,
        "height": 60_000,
        "bits": (8, 8, 8),
        "photometric": 2,
        "data": bytes(4),
    }
    assert rejected(tiff_file(page)).message.startswith("This image is 60,000×60,000 pixels")


def test_a_tiff_of_floating_point_colour_is_named_and_refused() -> None:
    floats = array("f", [0.5] * (4 * 4 * 3)).tobytes()
    page = {
        "width": 4,
        "height": 4,
        "bits": (32, 32, 32),
        "photometric": 2,
        "data": floats,
        "sample_format": 3,
    }
    exc = rejected(tiff_file(page))
    assert (exc.code, exc.message) == ("unsupported_format", MSG_TIFF_PIXELS)


def test_stored_images_and_masks_never_meet_the_tiff_parser() -> None:
    with pytest.raises(ImageRejected) as info:
        open_header(encode_image(SMALL, "TIFF"))
    assert info.value.code == "not_image"


# --- HEIC / HEIF ----------------------------------------------------------------------------------

# Quadrants of flat colours survive HEVC compression, so where each ends up is easy to see.
QUADRANTS = Image.new("RGB", (96, 64), (255, 0, 0))
QUADRANTS.paste((0, 255, 0), (48, 0, 96, 32))
QUADRANTS.paste((0, 0, 255), (0, 32, 48, 64))
QUADRANTS.paste((255, 255, 255), (48, 32, 96, 64))


def test_a_heic_is_stored_as_a_jpeg() -> None:
    data = encode_image(QUADRANTS, "HEIF", quality=90)
    assert data[4:12] == b"ftypheic"
    result = intake_bytes(data)
    assert (result.source_format, result.content_type, result.extension) == (
        "HEIF",
        "image/jpeg",
        "jpg",
    )
    assert (result.width, result.height, result.converted) == (96, 64, True)
    out = decode_image(result.data)
    assert out.format == "JPEG" and mean_difference(out, QUADRANTS) < 4


def test_a_heic_from_a_phone_held_upright_is_turned_exactly_once() -> None:
    # pillow-heif writes EXIF orientation 6 as HEIF's own rotation (an irot box); libheif turns
    # the image while decoding it, and pillow-heif then resets the EXIF tag to 1. Applying the
    # tag ourselves as well would turn the photo twice.
    data = encode_image(QUADRANTS, "HEIF", quality=90, exif=exif_with_orientation(6))
    opened = Image.open(io.BytesIO(data))
    assert opened.info["original_orientation"] == 6
    result = intake_bytes(data)
    upright = QUADRANTS.transpose(EXIF_TRANSPOSE[6])
    assert (result.width, result.height) == upright.size == (64, 96)
    out = decode_image(result.data)
    assert mean_difference(out, upright) < 4
    assert mean_difference(out, QUADRANTS.transpose(EXIF_TRANSPOSE[8])) > 60  # not the mirror
    assert ExifTags.Base.Orientation not in out.getexif()


def test_a_heic_with_transparency_becomes_a_png() -> None:
    rgba = QUADRANTS.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 48, 32))
    result = intake_bytes(encode_image(rgba, "HEIF", quality=90))
    out = decode_image(result.data)
    assert (result.content_type, out.mode) == ("image/png", "RGBA")
    assert out.getchannel("A").getextrema()[0] == 0


def test_a_heif_branded_only_mif1_is_read_as_heif_not_avif() -> None:
    # Pillow's AVIF plugin claims "mif1" too; it tries first and gives way.
    data = bytearray(encode_image(QUADRANTS, "HEIF", quality=90))
    data[8:12] = b"mif1"
    result = intake_bytes(bytes(data))
    assert (result.source_format, result.width, result.height) == ("HEIF", 96, 64)


def test_avif_stays_with_pillows_own_plugin() -> None:
    assert Image.OPEN["AVIF"][0] is AvifImagePlugin.AvifImageFile
    data = encode_image(SMALL, "AVIF", quality=60)
    result = intake_bytes(data)
    assert (result.source_format, result.data) == ("AVIF", data)


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.95])
def test_a_truncated_heif_is_refused_as_damaged(fraction: float) -> None:
    data = encode_image(QUADRANTS, "HEIF", quality=90)
    exc = rejected(data[: int(len(data) * fraction)])
    assert (exc.code, exc.message) == ("corrupt", MSG_CORRUPT)


def test_a_heif_bomb_is_refused_from_its_header_with_its_size() -> None:
    # The image-size box (ispe) says 10,000×10,000; decoding would find 64×64 and fail.
    data = bytearray(encode_image(GRAY.convert("RGB"), "HEIF"))
    assert data.count(b"ispe") == 1 and b"clap" not in data  # the size is ispe's alone
    at = data.find(b"ispe")
    data[at + 8 : at + 16] = struct.pack(">II", 10_000, 10_000)
    exc = rejected(bytes(data))
    assert (exc.code, exc.message) == (
        "too_many_pixels",
        "This image is 10,000×10,000 pixels (100 megapixels); the limit is 50 megapixels.",
    )


def test_a_heif_under_a_small_pixel_limit_is_refused(settings) -> None:
    settings.SAM3WEB_MAX_IMAGE_PIXELS = 96 * 64 - 1
    assert rejected(encode_image(QUADRANTS, "HEIF")).code == "too_many_pixels"
