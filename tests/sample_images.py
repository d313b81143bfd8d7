"""The images the tests and benchmarks use: the sample photos kept in the repo
(``segmentation/sample_images/``) plus the variants and broken files derived from them here.

``IMAGES`` is a folder holding all of them under the names the tests use (``cat.jpg``,
``cat-cmyk.jpg``, ``bad/bomb-30000x30000.png``, ...). It is built once into
``test-artifacts/images/`` and rebuilt when this module or a sample photo changes, so a fresh
clone needs nothing beside it. Every derived file is made deterministically.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "segmentation" / "sample_images"
BUILT = ROOT / "test-artifacts" / "images"


def _png(im: Image.Image, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **params)
    return buf.getvalue()


def _sample(name: str) -> Image.Image:
    im = Image.open(SAMPLES / name)
    im.load()
    return im


def camera_16bit() -> bytes:
    # 8-bit data in 16-bit samples (0..255, not scaled up), as scientific tools often write it.
    gray = _sample("camera-gray.png")
    return _png(
        Image.frombytes("I;16", gray.size, bytes(b for v in gray.tobytes() for b in (v, 0)))
    )


def cat_cmyk() -> bytes:
    buf = io.BytesIO()
    _sample("cat.jpg").convert("CMYK").save(buf, "JPEG", quality=90)  # Pillow writes Adobe's marker
    return buf.getvalue()


def cat_animated() -> bytes:
    cat = _sample("cat.jpg")
    frames = [cat, ImageOps.mirror(cat), ImageOps.invert(cat)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=300, loop=0)
    return buf.getvalue()


def coffee_rgba() -> bytes:
    im = _sample("coffee.jpg").convert("RGBA")
    alpha = Image.new("L", im.size, 255)
    alpha.paste(0, (0, 180, im.width, 220))  # a see-through strip across the middle
    im.putalpha(alpha)
    return _png(im)


def coffee_palette() -> bytes:
    return _png(_sample("coffee.jpg").quantize(256))


def rocket_jpeg() -> bytes:
    buf = io.BytesIO()
    _sample("rocket.webp").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def tiny() -> bytes:
    return _png(Image.new("RGB", (1, 1), (255, 0, 0)))


def truncated() -> bytes:
    data = (SAMPLES / "cat.jpg").read_bytes()
    return data[: len(data) // 3]


def huge_header_only() -> bytes:
    """A PNG whose header claims 65535×65535 pixels, with no pixel data at all."""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", 65535, 65535, 8, 2, 0, 0, 0))
        + _chunk(b"IEND", b"")
    )


def bomb() -> bytes:
    """A 0.9 MB PNG that decodes to 30000×30000 grey pixels (900 megapixels).

    Compressing 900 MB takes seconds; a deflate stream cut with a full flush is independent of
    what came before, so one compressed block of rows is written 30 times instead."""
    side, rows = 30000, 1000
    block = b"\0" * (side + 1) * rows  # each row: filter byte 0, then zeros
    segment = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = segment.compress(block) + segment.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    adler = 1
    for _ in range(side // rows):
        adler = zlib.adler32(block, adler)
    stream = b"\x78\xda" + piece * (side // rows) + end + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", stream)
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


DERIVED: dict[str, Callable[[], bytes]] = {
    "camera-16bit.png": camera_16bit,
    "cat-cmyk.jpg": cat_cmyk,
    "cat-animated.gif": cat_animated,
    "coffee-rgba.png": coffee_rgba,
    "coffee-palette.png": coffee_palette,
    "rocket.jpg": rocket_jpeg,
    "tiny-1x1.png": tiny,
    "bad/empty.jpg": lambda: b"",
    "bad/truncated.jpg": truncated,
    "bad/not-an-image.jpg": lambda: b"this is plain text, not a JPEG\n",
    "bad/html-as-png.png": lambda: (
        b"<html><body><script>alert(document.cookie)</script></body></html>\n"
    ),
    "bad/script.svg": lambda: (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<script>alert(1)</script><rect width="10" height="10"/></svg>\n'
    ),
    "bad/huge-header-only.png": huge_header_only,
    "bad/bomb-30000x30000.png": bomb,
}


def _fingerprint() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(SAMPLES.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def build(target: Path = BUILT) -> Path:
    """The folder of every test image, built if missing or out of date."""
    stamp = target / ".fingerprint"
    fingerprint = _fingerprint()
    if stamp.exists() and stamp.read_text() == fingerprint:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed into place, so a second process never sees half a folder.
    staging = Path(tempfile.mkdtemp(prefix=".images-", dir=target.parent))
    (staging / "bad").mkdir()
    for path in SAMPLES.iterdir():
        shutil.copyfile(path, staging / path.name)
    for name, make in DERIVED.items():
        (staging / name).write_bytes(make())
    (staging / ".fingerprint").write_text(fingerprint)
    old = target.with_name(f".old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    try:
        staging.rename(target)
    except OSError:  # another process built it a moment ago
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return target


IMAGES = build()
BAD = IMAGES / "bad"
