"""Image intake (uploads, bytes, data: URIs), against the test images: real files, real
decoders, nothing mocked."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from array import array
from pathlib import Path

import pytest
from django.core.files.uploadedfile import (
    InMemoryUploadedFile,
    SimpleUploadedFile,
    TemporaryUploadedFile,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageChops, ImageCms, ImageFile, ImageOps, ImageStat

from segmentation.imaging.decode import (
    MSG_CORRUPT,
    MSG_EMPTY,
    MSG_HEIC_KIND,
    MSG_NOT_IMAGE,
    MSG_SVG,
    MSG_WEB_PAGE,
    ImageRejected,
    to_8bit_gray,
)
from segmentation.imaging.intake import (
    IntakeResult,
    data_uri,
    intake_bytes,
    intake_upload,
)
from tests.factories import decode_image, encode_image
from tests.sample_images import IMAGES, ROOT

BAD = IMAGES / "bad"
MiB = 1024 * 1024


def read(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = value
    return exif.tobytes()


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    # alpha_only=False: by default an RGBA getbbox looks at the alpha channel alone.
    diff = ImageChops.difference(a.convert("RGBA"), b.convert("RGBA"))
    return diff.getbbox(alpha_only=False) is None


def rejected(data: bytes) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        intake_bytes(data)
    return info.value


# A small, asymmetric photo: flips and rotations all give different pixels.
SMALL = Image.open(IMAGES / "cat.jpg").convert("RGB").resize((48, 32))


# --- bad files ------------------------------------------------------------------------------------

BAD_FILES = {
    "empty.jpg": ("empty", MSG_EMPTY),
    "truncated.jpg": ("corrupt", MSG_CORRUPT),
    "not-an-image.jpg": ("not_image", MSG_NOT_IMAGE),
    "html-as-png.png": ("web_page", MSG_WEB_PAGE),
    "script.svg": ("svg", MSG_SVG),
    "bomb-30000x30000.png": (
        "too_many_pixels",
        "This image is 30,000×30,000 pixels (900 megapixels); the limit is 50 megapixels.",
    ),
    "huge-header-only.png": (
        "too_many_pixels",
        "This image is 65,535×65,535 pixels (4,294.8 megapixels); the limit is 50 megapixels.",
    ),
}


def test_every_bad_file_has_an_expectation() -> None:
    assert sorted(p.name for p in BAD.iterdir()) == sorted(BAD_FILES)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_refused_with_a_clear_message(name: str) -> None:
    code, message = BAD_FILES[name]
    exc = rejected((BAD / name).read_bytes())
    assert (exc.code, exc.message, str(exc)) == (code, message, message)
    assert isinstance(exc, ValueError)


def test_bomb_refusal_leaks_no_global_state() -> None:
    pixels_before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)
    rejected((BAD / "bomb-30000x30000.png").read_bytes())
    assert pixels_before == Image.MAX_IMAGE_PIXELS
    assert warnings.filters == filters_before
    # Truncation detection relies on Pillow's default; nobody may have switched it on.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    """In a fresh interpreter, refusing the 900-megapixel bomb (decoded: 900 MB) raises the
    peak RSS by almost nothing; bench/bench_bomb_memory.py has the full numbers."""
    script = textwrap.dedent(
        """
        import json, os, resource, sys
        import django
        sys.path.insert(0, os.getcwd())
        os.environ["DJANGO_SETTINGS_MODULE"] = "sam3web.settings"
        django.setup()
        from segmentation.imaging.intake import ImageRejected, intake_bytes
        intake_bytes(open(sys.argv[2], "rb").read())  # warm up: codecs and imports
        data = open(sys.argv[1], "rb").read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            intake_bytes(data)
            outcome = "accepted"
        except ImageRejected as exc:
            outcome = exc.code
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"outcome": outcome, "delta_kib": after - before}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(BAD / "bomb-30000x30000.png"), str(IMAGES / "cat.jpg")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "too_many_pixels"
    assert result["delta_kib"] < 8 * 1024, result


# --- good files -----------------------------------------------------------------------------------

# name: (width, height as seen, converted, content_type, source_format)
GOOD_FILES = {
    "astronaut.jpg": (512, 512, False, "image/jpeg", "JPEG"),
    "camera-16bit.png": (512, 512, True, "image/png", "PNG"),
    "camera-gray.png": (512, 512, False, "image/png", "PNG"),
    "cat-animated.gif": (451, 300, True, "image/png", "GIF"),
    "cat-cmyk.jpg": (451, 300, True, "image/jpeg", "JPEG"),
    "cat-exif-rotated.jpg": (300, 451, True, "image/jpeg", "JPEG"),
    "cat.jpg": (451, 300, False, "image/jpeg", "JPEG"),
    "coffee-palette.png": (600, 400, False, "image/png", "PNG"),
    "coffee-rgba.png": (600, 400, False, "image/png", "PNG"),
    "coffee.jpg": (600, 400, False, "image/jpeg", "JPEG"),
    "coins.png": (384, 303, False, "image/png", "PNG"),
    "horse.png": (400, 328, False, "image/png", "PNG"),
    "large-4032x3024.jpg": (4032, 3024, False, "image/jpeg", "JPEG"),
    "rocket.jpg": (640, 427, False, "image/jpeg", "JPEG"),
    "rocket.webp": (640, 427, False, "image/webp", "WEBP"),
    "tiny-1x1.png": (1, 1, False, "image/png", "PNG"),
}
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def test_every_good_file_has_an_expectation() -> None:
    names = sorted(
        p.name
        for p in IMAGES.iterdir()
        if p.is_file() and p.suffix != ".md" and not p.name.startswith(".")
    )
    assert names == sorted(GOOD_FILES)


@pytest.mark.parametrize("name", sorted(GOOD_FILES))
def test_good_file_is_accepted(name: str) -> None:
    width, height, converted, content_type, source_format = GOOD_FILES[name]
    original = read(name)
    result = intake_bytes(original)
    assert isinstance(result, IntakeResult)
    assert (result.width, result.height) == (width, height)
    assert result.converted is converted
    assert result.content_type == content_type
    assert result.extension == EXTENSIONS[content_type]
    assert result.source_format == source_format
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()
    if converted:
        assert result.data != original
        out = decode_image(result.data)
        assert out.size == (width, height)
        assert out.format is not None
        assert Image.MIME[out.format] == content_type
    else:
        assert result.data == original  # byte for byte


def test_exif_rotated_jpeg_is_turned_upright_and_loses_the_tag() -> None:
    result = intake_bytes(read("cat-exif-rotated.jpg"))
    out = decode_image(result.data)
    assert out.format == "JPEG" and out.size == (300, 451)
    assert ExifTags.Base.Orientation not in out.getexif()
    expected = ImageOps.exif_transpose(Image.open(IMAGES / "cat-exif-rotated.jpg"))
    # Re-encoded at quality 95: the same picture up to JPEG noise.
    diff = ImageStat.Stat(ImageChops.difference(out.convert("RGB"), expected.convert("RGB")))
    assert max(diff.mean) < 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(orientation: int) -> None:
    data = encode_image(SMALL, "PNG", exif=exif_with_orientation(orientation))
    result = intake_bytes(data)
    expected = ImageOps.exif_transpose(decode_image(data))
    assert (result.width, result.height) == expected.size
    assert result.converted is (orientation != 1)
    assert result.content_type == "image/png"
    out = decode_image(result.data)
    assert same_pixels(out, expected)
    assert ExifTags.Base.Orientation not in out.getexif() or orientation == 1


def test_rotated_jpeg_keeps_its_icc_profile() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode_image(SMALL, "JPEG", quality=90, icc_profile=icc, exif=exif_with_orientation(8))
    result = intake_bytes(data)
    out = decode_image(result.data)
    assert result.content_type == "image/jpeg" and result.converted
    assert out.size == (32, 48)
    assert out.info.get("icc_profile") == icc
    assert ExifTags.Base.Orientation not in out.getexif()


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF"])
def test_rotated_webp_and_avif_become_png(fmt: str) -> None:
    result = intake_bytes(encode_image(SMALL, fmt, exif=exif_with_orientation(6)))
    assert result.converted and result.content_type == "image/png"
    assert (result.width, result.height) == (32, 48)
    assert decode_image(result.data).size == (32, 48)


def test_cmyk_jpeg_becomes_rgb_jpeg_with_the_right_colours() -> None:
    result = intake_bytes(read("cat-cmyk.jpg"))
    out = decode_image(result.data)
    assert (out.format, out.mode) == ("JPEG", "RGB")
    reference = ImageStat.Stat(Image.open(IMAGES / "cat.jpg").convert("RGB")).mean
    for got, want in zip(ImageStat.Stat(out).mean, reference, strict=True):
        assert abs(got - want) < 3  # not inverted, not washed out


def test_animated_gif_becomes_a_png_of_its_first_frame() -> None:
    result = intake_bytes(read("cat-animated.gif"))
    out = decode_image(result.data)
    assert out.format == "PNG" and getattr(out, "n_frames", 1) == 1
    gif = Image.open(IMAGES / "cat-animated.gif")
    first = gif.convert("RGBA")
    gif.seek(1)
    second = gif.convert("RGBA")
    assert not same_pixels(first, second)  # the frames do differ
    assert same_pixels(out, first)


def test_still_gif_becomes_png_keeping_transparency() -> None:
    im = SMALL.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    result = intake_bytes(encode_image(im, "GIF", transparency=0))
    out = decode_image(result.data)
    assert (out.format, result.converted) == ("PNG", True)
    # Palette index 0 is still see-through: the lowest alpha is 0.
    assert out.convert("RGBA").getchannel("A").getextrema()[0] == 0


def test_camera_16bit_becomes_8bit_gray_with_its_real_contrast() -> None:
    # Surprise: camera-16bit.png holds 0..255 in 16-bit samples (8-bit data, not scaled up), so a
    # blind >> 8 would make it black. It comes out identical to the 8-bit camera-gray.png.
    assert Image.open(IMAGES / "camera-16bit.png").getextrema() == (0, 255)
    out = decode_image(intake_bytes(read("camera-16bit.png")).data)
    assert out.mode == "L"
    gray = Image.open(IMAGES / "camera-gray.png")
    assert same_pixels(out, gray)


@pytest.mark.parametrize("scale", [257, 256, 16])  # full-range 16-bit, >> 8 exact, 12-bit data
def test_high_bit_png_is_scaled_not_clipped(scale: int) -> None:
    gray = Image.open(IMAGES / "camera-gray.png")
    wide = Image.frombytes(
        "I;16", gray.size, array("H", [v * scale for v in gray.tobytes()]).tobytes()
    )
    data = encode_image(wide, "PNG")
    assert decode_image(data).mode == "I;16"
    out = decode_image(intake_bytes(data).data)
    assert out.mode == "L"
    assert same_pixels(out, gray)


def test_float_and_32bit_gray_are_spread_over_8_bits() -> None:
    ramp = Image.linear_gradient("L")  # 256x256, 0..255 top to bottom
    floats = ramp.convert("F").point(lambda v: v / 255)  # 0..1
    assert to_8bit_gray(floats).getextrema() == (0, 255)
    signed = ramp.convert("I").point(lambda v: v * 1000 - 100_000)  # negative and large
    out = to_8bit_gray(signed)
    assert out.mode == "L" and out.getextrema() == (0, 255)


def test_generated_avif_is_accepted_unchanged() -> None:
    data = encode_image(SMALL, "AVIF", quality=60)
    result = intake_bytes(data)
    assert (result.content_type, result.extension, result.source_format) == (
        "image/avif",
        "avif",
        "AVIF",
    )
    assert (result.width, result.height, result.converted) == (48, 32, False)
    assert result.data == data


def test_mpo_from_a_phone_is_treated_as_jpeg() -> None:
    data = encode_image(SMALL, "MPO", save_all=True, append_images=[SMALL.rotate(180)])
    result = intake_bytes(data)
    assert result.source_format == "MPO"
    assert (result.content_type, result.extension, result.converted) == ("image/jpeg", "jpg", False)
    assert result.data == data


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA"])
def test_modes_every_browser_shows_are_kept(mode: str) -> None:
    data = encode_image(SMALL.convert(mode), "PNG")
    assert intake_bytes(data).data == data


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("BMP", "BMP"),
        ("ICO", "ICO"),
        ("JPEG2000", "JPEG 2000"),
        ("PDF", "PDF"),
    ],
)
def test_other_image_formats_are_named_and_refused(fmt: str, name: str) -> None:
    exc = rejected(encode_image(SMALL, fmt))
    assert exc.code == "unsupported_format"
    assert exc.message == (
        f"{name} images are not supported. Please use JPEG, PNG, WebP, GIF, AVIF, TIFF or HEIC."
    )


def test_a_heic_header_with_nothing_behind_it_is_damaged() -> None:
    fake_heic = struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + bytes(64)
    exc = rejected(fake_heic)
    assert (exc.code, exc.message) == ("corrupt", MSG_CORRUPT)


def test_an_iso_file_of_an_unknown_brand_with_heic_among_its_brands_is_named() -> None:
    odd = struct.pack(">I", 24) + b"ftypzzzz" + b"\0\0\0\0" + b"zzzzheic" + bytes(64)
    exc = rejected(odd)
    assert (exc.code, exc.message) == ("unsupported_format", MSG_HEIC_KIND)


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        b"\xef\xbb\xbf  <svg><circle r='5'/></svg>",
        b"<!-- made by hand -->\n<svg></svg>",
    ],
)
def test_svg_is_recognised_by_content(data: bytes) -> None:
    assert rejected(data).code == "svg"


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE html><title>x</title>",
        b"\n\n<html lang=en>",
        b"<p>hello</p>",
        b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"></html>',
    ],
)
def test_html_is_recognised_by_content(data: bytes) -> None:
    assert rejected(data).code == "web_page"


def test_plain_xml_is_just_not_an_image() -> None:
    assert rejected(b'<?xml version="1.0"?><feed/>').code == "not_image"


def png_with_size(width: int, height: int) -> bytes:
    """A PNG header (valid CRCs) claiming any size, with almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(0, 10), (10, 0), (0, 0)])
def test_zero_size_images_are_refused(size: tuple[int, int]) -> None:
    # Pillow itself refuses a zero dimension in the header, so these are "damaged" files.
    assert rejected(png_with_size(*size)).code in ("corrupt", "no_pixels")


def test_header_only_image_under_the_pixel_limit_is_corrupt() -> None:
    assert rejected(png_with_size(1000, 1000)).code == "corrupt"


def test_tiny_image_is_fine() -> None:
    result = intake_bytes(read("tiny-1x1.png"))
    assert (result.width, result.height, result.converted) == (1, 1, False)


# --- limits ---------------------------------------------------------------------------------------


def test_byte_limit(settings) -> None:
    cat = read("cat.jpg")
    settings.SAM3WEB_MAX_IMAGE_BYTES = len(cat)
    assert intake_bytes(cat).data == cat
    settings.SAM3WEB_MAX_IMAGE_BYTES = len(cat) - 1
    exc = rejected(cat)
    assert exc.code == "too_large"


def test_byte_limit_is_stated_in_mib(settings) -> None:
    settings.SAM3WEB_MAX_IMAGE_BYTES = 512 * 1024
    assert rejected(read("large-4032x3024.jpg")).message == (
        "This file is larger than the 0.5 MiB limit."
    )


def test_default_byte_limit_is_50_mib() -> None:
    assert rejected(b"\xff\xd8\xff" + bytes(50 * MiB)).message == (
        "This file is larger than the 50 MiB limit."
    )


def test_pixel_limit(settings) -> None:
    cat = read("cat.jpg")
    settings.SAM3WEB_MAX_IMAGE_PIXELS = 451 * 300
    assert intake_bytes(cat).width == 451
    settings.SAM3WEB_MAX_IMAGE_PIXELS = 451 * 300 - 1
    exc = rejected(cat)
    assert exc.code == "too_many_pixels"
    assert exc.message == (
        "This image is 451×300 pixels (0.1 megapixels); the limit is 0.135299 megapixels."
    )


def test_pixel_limit_counts_the_gif_frame_not_only_the_screen(settings) -> None:
    settings.SAM3WEB_MAX_IMAGE_PIXELS = 451 * 300 - 1
    assert rejected(read("cat-animated.gif")).code == "too_many_pixels"


def test_a_huge_pixel_setting_cannot_lift_pillows_own_limit(settings) -> None:
    settings.SAM3WEB_MAX_IMAGE_PIXELS = 10**12
    exc = rejected((BAD / "bomb-30000x30000.png").read_bytes())
    assert exc.code == "too_many_pixels"
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's limit is on
    assert exc.message.endswith(f"the limit is {Image.MAX_IMAGE_PIXELS / 1e6:g} megapixels.")


# --- uploads --------------------------------------------------------------------------------------


def test_upload_is_judged_by_content_not_name() -> None:
    result = intake_upload(SimpleUploadedFile("holiday.png", read("cat.jpg"), "image/png"))
    assert (result.content_type, result.extension) == ("image/jpeg", "jpg")


def test_upload_over_the_limit_is_refused_before_reading(settings) -> None:
    settings.SAM3WEB_MAX_IMAGE_BYTES = MiB
    body = io.BytesIO(read("cat.jpg"))
    upload = InMemoryUploadedFile(body, "image", "cat.jpg", "image/jpeg", 2 * MiB, None)
    with pytest.raises(ImageRejected) as info:
        intake_upload(upload)
    assert info.value.code == "too_large"
    assert body.tell() == 0  # not a byte read


def test_upload_that_understates_its_size_is_stopped_while_reading(settings) -> None:
    settings.SAM3WEB_MAX_IMAGE_BYTES = 100_000
    upload = TemporaryUploadedFile("big.jpg", "image/jpeg", 0, None)
    try:
        upload.write(read("large-4032x3024.jpg"))
        upload.size = 10  # a handler that got it wrong
        with pytest.raises(ImageRejected) as info:
            intake_upload(upload)
        assert info.value.code == "too_large"
        assert upload.tell() < 300_000  # stopped after a few 64 KiB chunks, not 0.8 MB
    finally:
        upload.close()


def test_upload_from_a_temporary_file_on_disk() -> None:
    upload = TemporaryUploadedFile("rotated.jpg", "image/jpeg", 0, None)
    try:
        upload.write(read("cat-exif-rotated.jpg"))
        upload.size = upload.tell()
        upload.seek(0)
        result = intake_upload(upload)
    finally:
        upload.close()
    assert (result.width, result.height, result.converted) == (300, 451, True)


def test_empty_upload() -> None:
    with pytest.raises(ImageRejected) as info:
        intake_upload(SimpleUploadedFile("empty.jpg", b""))
    assert info.value.message == MSG_EMPTY


def test_data_uri_round_trips() -> None:
    data = read("tiny-1x1.png")
    uri = data_uri(data, "image/png")
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == data


# --- fuzzing --------------------------------------------------------------------------------------


def intake_or_refuse(data: bytes) -> None:
    """The contract: a result or ImageRejected, never any other exception."""
    try:
        result = intake_bytes(data)
    except ImageRejected as exc:
        assert exc.message and exc.code
        return
    assert result.width > 0 and result.height > 0
    with warnings.catch_warnings():  # Pillow may grumble about what we kept byte for byte
        warnings.simplefilter("ignore")
        assert decode_image(result.data).size == (result.width, result.height)


SEEDS = [
    encode_image(SMALL, "JPEG", quality=80, exif=exif_with_orientation(6)),
    encode_image(SMALL.convert("CMYK"), "JPEG"),
    encode_image(SMALL, "PNG"),
    encode_image(SMALL.convert("P"), "PNG", exif=exif_with_orientation(3)),
    encode_image(
        SMALL.convert("P"), "GIF", save_all=True, append_images=[SMALL.rotate(180).convert("P")]
    ),
    encode_image(SMALL, "WEBP", exif=exif_with_orientation(8)),
    encode_image(SMALL, "AVIF", quality=50),
    encode_image(SMALL, "MPO", save_all=True, append_images=[SMALL]),
    encode_image(Image.frombytes("I;16", (4, 4), bytes(range(32))), "PNG"),
    encode_image(SMALL, "TIFF", tiffinfo={274: 6}),
    encode_image(SMALL.convert("CMYK"), "TIFF", compression="tiff_lzw"),
    encode_image(Image.frombytes("I;16", (4, 4), bytes(range(32))), "TIFF"),
    encode_image(SMALL, "TIFF", save_all=True, append_images=[SMALL.rotate(180)]),
    encode_image(SMALL, "HEIF", quality=50),
]

# Hypothesis: no example database (it would leave a .hypothesis folder in the project), no
# per-example deadline (AVIF decodes vary), and the conftest's autouse settings fixture is
# function-scoped but harmless to share between examples.
FUZZ = hsettings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes(data: bytes) -> None:
    intake_or_refuse(data)


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "cut", "drop", "insert", "header"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif action == "cut":
            del data[at:]
        elif action == "drop":
            del data[at : at + draw(st.integers(1, 64))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:  # headers are where the interesting parsing happens
            data[draw(st.integers(0, min(64, len(data) - 1)))] = draw(st.integers(0, 255))
        if not data:
            break
    return bytes(data)


@FUZZ
@given(mutated_images())
def test_fuzz_mutated_images(data: bytes) -> None:
    intake_or_refuse(data)


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_fuzz_png_header_sizes(width: int, height: int) -> None:
    intake_or_refuse(png_with_size(width, height))


@FUZZ
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_fuzz_jpeg_header_sizes(width: int, height: int) -> None:
    data = bytearray(SEEDS[0])
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    intake_or_refuse(bytes(data))
