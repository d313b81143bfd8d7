"""Same prompts on other images: where an earlier run's points and boxes land on an image of
another size, and what to tell the person about it. Points and boxes are pixels, so for an
image they do not fit the person chooses: keep them (and stop), drop the ones outside, or scale
them to the image."""

from __future__ import annotations

from dataclasses import dataclass

from segmentation.models import Run
from segmentation.schema import box_fits, point_fits

KEEP, DROP, SCALE = "keep", "drop", "scale"
# The one that starts runs on any image first: it is the form's choice unless changed.
FIT_CHOICES = [
    (SCALE, "Scale them to each image’s size (the same place relative to the image)"),
    (DROP, "Drop the points and boxes that lie outside an image"),
    (KEEP, "Keep them at the same pixels, and stop if any lies outside an image"),
]


def scale_point(p: dict[str, int], src: tuple[int, int], dst: tuple[int, int]) -> dict[str, int]:
    """The pixel whose centre sits where the source pixel's centre sits, relatively."""
    (sw, sh), (dw, dh) = src, dst
    x = min(dw - 1, ((2 * p["x"] + 1) * dw) // (2 * sw))
    y = min(dh - 1, ((2 * p["y"] + 1) * dh) // (2 * sh))
    return {**p, "x": x, "y": y}


def scale_box(b: dict[str, int], src: tuple[int, int], dst: tuple[int, int]) -> dict[str, int]:
    """The box scaled outwards to whole pixels (never empty, never past the edge)."""
    (sw, sh), (dw, dh) = src, dst
    x_min = b["x_min"] * dw // sw
    y_min = b["y_min"] * dh // sh
    x_max = min(dw, max(x_min + 1, -(-b["x_max"] * dw // sw)))
    y_max = min(dh, max(y_min + 1, -(-b["y_max"] * dh // sh)))
    return {**b, "x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max}


def _count(out: int, total: int, one: str, many: str) -> str:
    if total == 1:
        return f"the {one}"
    if out == total:
        return f"both {many}" if total == 2 else f"all {total} {many}"
    return f"{out} of {total} {many}"


def outside_text(points_out: int, points: int, boxes_out: int, boxes: int) -> str:
    """'2 of 3 points and the box lie', 'the point lies', ''. Empty when all fit."""
    parts = []
    if points_out:
        parts.append(_count(points_out, points, "point", "points"))
    if boxes_out:
        parts.append(_count(boxes_out, boxes, "box", "boxes"))
    if not parts:
        return ""
    verb = "lies" if len(parts) == 1 and (points_out + boxes_out) == 1 else "lie"
    return f"{' and '.join(parts)} {verb}"


@dataclass
class Placement:
    """What of the source run's prompt goes with one image, and what to tell the person."""

    points: list[dict[str, int]]
    boxes: list[dict[str, int]]
    note: str = ""  # what happened to the points and boxes, for the person
    error: str = ""  # why this image cannot be run as asked (shown above the form)
    brief: str = ""  # the same, shortly, shown beside the image


def place(source: Run, size: tuple[int, int], name: str, fit: str, *, has_text: bool) -> Placement:
    points, boxes = source.points, source.boxes
    width, height = size
    if not points and not boxes:
        return Placement([], [])
    src = (source.image.width, source.image.height)
    if fit == SCALE:
        placed = Placement(
            [scale_point(p, src, size) for p in points], [scale_box(b, src, size) for b in boxes]
        )
        if src != size:
            placed.note = (
                f"{name} is {width}×{height}: the points and boxes are scaled to it "
                f"from the {src[0]}×{src[1]} original."
            )
        return placed
    kept_points = [p for p in points if point_fits(p, width, height)]
    kept_boxes = [b for b in boxes if box_fits(b, width, height)]
    outside = outside_text(
        len(points) - len(kept_points), len(points), len(boxes) - len(kept_boxes), len(boxes)
    )
    if not outside:
        return Placement(points, boxes)
    where = f"{name} is {width}×{height}: {outside} outside it"
    brief = f"{outside[0].upper()}{outside[1:]} outside it."
    nothing_left = not has_text and not kept_points and not kept_boxes
    if nothing_left:
        brief += " With no text prompt, nothing would be left to run."
    if fit == KEEP:
        if nothing_left:
            return Placement(
                points,
                boxes,
                error=f"{where}, and this run has no text prompt, so it cannot run on this "
                "image as it is. Scale the points and boxes to each image, or leave it out.",
                brief=brief,
            )
        return Placement(
            points,
            boxes,
            error=f"{where}. Choose below to drop them or to scale them to each image.",
            brief=brief,
        )
    if nothing_left:
        return Placement(
            [],
            [],
            error=f"{where}, and this run has no text prompt: with them dropped nothing is "
            "left to run on this image. Scale them instead, or leave it out.",
            brief=brief,
        )
    return Placement(kept_points, kept_boxes, note=f"{where}: dropped for this image.")
