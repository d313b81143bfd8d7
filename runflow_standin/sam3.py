"""SAM 3, deterministically: the masks the stand-in "finds" are drawn from the prompts
(ellipses around points and inside boxes, a shape fixed by the text's hash), so tests can
check geometry end to end."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

PREVIEW_FORMATS = {
    "png": ("PNG", "png", "image/png"),
    "jpeg": ("JPEG", "jpg", "image/jpeg"),
    "webp": ("WEBP", "webp", "image/webp"),
}
# Distinct, saturated colours for painting instances over the preview.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
)

# An axis-aligned box in input-image pixels, continuous: (x0, y0, x1, y1) covers [x0, x1) ×
# [y0, y1), so pixel (i, j) is inside when its area is. Shapes are ellipses inscribed in them.
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Instance:
    """One object SAM 3 "found": the union of `add` ellipses minus the `carve` ones."""

    add: tuple[Box, ...]
    carve: tuple[Box, ...]

    def render(
        self, image_size: tuple[int, int], size: tuple[int, int], fill: int = 255
    ) -> Image.Image:
        """An 8-bit mask at `size`, the shapes scaled from `image_size` to it."""
        mask = Image.new("L", size, 0)
        draw = ImageDraw.Draw(mask)
        sx, sy = size[0] / image_size[0], size[1] / image_size[1]
        for shapes, value in ((self.add, fill), (self.carve, 0)):
            for x0, y0, x1, y1 in shapes:
                # Pillow's ellipse includes its right and bottom edges: pixel indices, not the
                # continuous edges, hence the - 1 (kept ≥ the start so a sliver stays legal).
                left, top = x0 * sx, y0 * sy
                right, bottom = max(left, x1 * sx - 1), max(top, y1 * sy - 1)
                draw.ellipse((left, top, right, bottom), fill=value)
        return mask


def point_radius(image_size: tuple[int, int]) -> int:
    return max(3, round(0.06 * min(image_size)))


def text_shape(prompt: str, index: int, image_size: tuple[int, int]) -> Box:
    """An ellipse about a fifth of the image across, somewhere fixed by the prompt's hash."""
    w, h = image_size
    digest = hashlib.sha256(f"{prompt}\x00{index}".encode()).digest()
    fw = 0.16 + 0.08 * digest[0] / 255
    fh = 0.16 + 0.08 * digest[1] / 255
    ew, eh = fw * w, fh * h
    x0 = int.from_bytes(digest[2:4]) / 65535 * (w - ew)
    y0 = int.from_bytes(digest[4:6]) / 65535 * (h - eh)
    return (x0, y0, x0 + ew, y0 + eh)


def plan_instances(data: Mapping[str, Any], image_size: tuple[int, int]) -> list[Instance]:
    """What SAM 3 would return for this input, as shapes: boxes sharing an object_id are one
    object, positive points join the box (or point) object with their id or stand alone,
    negative points carve every object, and with no positive prompt the text decides."""
    radius = point_radius(image_size)

    def disc(point: Mapping[str, Any]) -> Box:
        # Around the centre of the pixel the point names.
        cx, cy = point["x"] + 0.5, point["y"] + 0.5
        return (cx - radius, cy - radius, cx + radius, cy + radius)

    groups: list[list[Box]] = []
    by_id: dict[int, int] = {}  # object_id → index in groups; boxes claim ids first

    def add(object_id: int | None, shape: Box) -> None:
        if object_id is not None and object_id in by_id:
            groups[by_id[object_id]].append(shape)
            return
        if object_id is not None:
            by_id[object_id] = len(groups)
        groups.append([shape])

    for box in data.get("box_prompts") or []:
        add(box.get("object_id"), (box["x_min"], box["y_min"], box["x_max"], box["y_max"]))
    carve: list[Box] = []
    for point in data.get("point_prompts") or []:
        if point["label"] == 0:
            carve.append(disc(point))
        else:
            add(point.get("object_id"), disc(point))
    multiple = bool(data.get("return_multiple_masks", False))
    keep = data.get("max_masks", 3) if multiple else 1
    if not groups:
        # Text alone (or only negative points, which then carve what the text found).
        prompt = prompt_of(data)
        groups = [[text_shape(prompt, index, image_size)] for index in range(keep)]
    return [Instance(tuple(shapes), tuple(carve)) for shapes in groups[:keep]]


def prompt_of(data: Mapping[str, Any]) -> str:
    # "wheel" is the documented default when no prompt is sent at all.
    return data.get("prompt", data.get("text_prompt", "wheel"))


def score(index: int) -> float:
    # 0.95, 0.91, 0.87...; floored so a 32nd mask still has a plausible positive score.
    return round(max(0.01, 0.95 - 0.04 * index), 2)


def normalized_box(mask: Image.Image) -> list[float]:
    """The mask's pixel bounding box as SAM 3 reports it: [cx, cy, w, h], each 0–1."""
    bbox = mask.getbbox()
    if bbox is None:
        return [0.0, 0.0, 0.0, 0.0]
    left, top, right, bottom = bbox
    w, h = mask.size
    return [
        round((left + right) / 2 / w, 6),
        round((top + bottom) / 2 / h, 6),
        round((right - left) / w, 6),
        round((bottom - top) / h, 6),
    ]


def encode(image: Image.Image, pil_format: str, *, fast: bool = False) -> bytes:
    # Fixed settings, so encoding the same pixels twice gives the same bytes (file_size holds).
    # `fast` for photos (previews), where zlib's default level costs seconds at 12 MP.
    buffer = io.BytesIO()
    if pil_format == "PNG":
        image.save(buffer, "PNG", compress_level=1 if fast else 6)
    else:
        image.save(buffer, pil_format, quality=85)
    return buffer.getvalue()


def data_uri(content_type: str, payload: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(payload).decode()}"


@dataclass
class Result:
    """What a succeeded run produced, kept as a recipe: files are drawn again on each GET, so
    32 masks of a large image cost nothing until someone downloads them."""

    image_url: str
    image_size: tuple[int, int]
    mask_size: tuple[int, int]
    instances: list[Instance]
    preview: tuple[str, str, str] | None  # (Pillow format, extension, content type)
    sync_mode: bool
    expired: bool = False
    failed_once: set[str] = field(default_factory=set)  # files whose "500-once" has fired

    def mask_png(self, index: int) -> bytes:
        return encode(self.instances[index].render(self.image_size, self.mask_size), "PNG")
