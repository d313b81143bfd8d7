"""Exports of a run's results: a ZIP of masks, a JSON description, COCO and a composite PNG.

Everything is built from our own copies of the masks (1-bit PNGs at the size of the image the
person sees), never from Runflow's links, which expire. Masks are read one at a time, so memory
holds one mask (and, for the composite, the image and its overlay) however many there are.

* ``parse_view`` reads "what I see" from a query string (``visible``, ``threshold``,
  ``colours``, ``opacity``), strictly: anything else is a ``BadView`` with a sentence that can be
  shown as it is.
* ``select`` applies a view to a run's masks: the instances to export, each with its colour.
* ``run_json``, ``write_zip``, ``coco_json`` and ``composite_png`` build the four formats.
* ``rle_counts`` and ``rle_string`` are COCO's run-length encoding in pure Python
  (pycocotools is only a test dependency): counts over the column-major (Fortran order) pixels
  starting with a run of zeros, then the compressed string of ``rleToString`` in COCO's
  ``maskApi.c``.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import IO, Any

from django.urls import reverse
from django.utils.text import slugify
from PIL import Image, ImageDraw, ImageFont

from segmentation.imaging.decode import EXIF_TRANSPOSE, displayable, orientation
from segmentation.imaging.render import colour_for
from segmentation.imaging.store import read_file
from segmentation.models import Mask, Run

# --- COCO run-length encoding -------------------------------------------------------------------


def rle_counts(mask: Image.Image) -> list[int]:
    """COCO's uncompressed RLE counts of a mask: run lengths over its pixels in column-major
    (Fortran) order, alternating 0 and 1 and starting with a run of zeros (0 when the first pixel
    is set). A mode "1" image is used as it is; any other mode is thresholded (> 127 is set).

    The image is transposed so that its columns become rows, then runs are found with
    ``bytes.find`` (memchr): a loop step per run, not per pixel, so a 12-megapixel mask with a few
    thousand runs takes a few tens of milliseconds."""
    if mask.mode != "1":
        mask = mask.convert("L").point(_THRESHOLD, "1")
    # "1" images are stored one byte per pixel inside Pillow: transposing is a cheap copy, and
    # "L" gives 0 / 255 bytes.
    data = mask.transpose(Image.Transpose.TRANSPOSE).convert("L").tobytes()
    total = len(data)
    counts: list[int] = []
    append, find = counts.append, data.find
    pos, look_for, other = 0, b"\xff", b"\x00"
    while pos < total:
        end = find(look_for, pos)
        if end < 0:
            end = total
        append(end - pos)
        pos = end
        look_for, other = other, look_for
    return counts


_THRESHOLD = [0] * 128 + [255] * 128


def rle_string(counts: Sequence[int]) -> str:
    """COCO's compressed form of RLE counts (``rleToString`` in maskApi.c): each count, from the
    fourth on as the difference to the count two before it, in 5-bit groups, least significant
    first, each group a character from 48 ("0") on, with 0x20 set when more groups follow; a
    group with 0x10 set ends a negative number when the rest is all ones."""
    out = bytearray()
    append = out.append
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        while True:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in C for a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            append(c + 48)
            if not more:
                break
    return out.decode("ascii")


def rle_area(counts: Sequence[int]) -> int:
    return sum(counts[1::2])


# --- what I see ---------------------------------------------------------------------------------

# The downloads a run page offers: (format in the URL, button, what it holds).
LINKS = (
    ("masks.zip", "ZIP of masks", "One PNG per mask at the image's size, with instances.json"),
    ("json", "JSON", "Run, prompts, options, and each instance's score, box and area"),
    ("coco", "COCO", "Instance segmentation with RLE masks, for pycocotools"),
    ("composite.png", "Composite PNG", "The image with the masks, boxes and scores drawn on it"),
)


def links(url: Callable[[str], str]) -> list[dict[str, str]]:
    """LINKS with each format's URL, as `url(fmt)` makes it (the team's or a public link's)."""
    return [{"fmt": f, "label": label, "help": text, "url": url(f)} for f, label, text in LINKS]


MAX_QUERY_LENGTH = 4096
MAX_PARAM_LENGTH = 1000
PARAMETERS = ("visible", "threshold", "colours", "opacity")
DEFAULT_OPACITY = 0.5
_NUMBER = re.compile(r"[0-9]{1,5}")
_FRACTION = re.compile(r"(?:[0-9]{1,3}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})")
_HEX = re.compile(r"#?([0-9a-fA-F]{6})")


class BadView(ValueError):
    """A query parameter that does not describe a view; the message says why, for people."""


@dataclass(frozen=True)
class View:
    """What the person sees in the viewer. ``visible`` None: every instance."""

    visible: frozenset[int] | None = None
    threshold: float = 0.0
    colours: Mapping[int, tuple[int, int, int]] = field(default_factory=dict)
    opacity: float = DEFAULT_OPACITY

    @property
    def alpha(self) -> int:
        return round(self.opacity * 255)

    def shows(self, mask: Mask) -> bool:
        if self.visible is not None and mask.number not in self.visible:
            return False
        # As the viewer decides (viewer.js, passes()): an instance without a score is never
        # below the threshold, and one equal to it stays, float noise included.
        return mask.score is None or mask.score >= self.threshold - 1e-9

    def colour(self, mask: Mask) -> tuple[int, int, int]:
        return self.colours.get(mask.number) or colour_for(mask.index)

    def describe(self) -> dict[str, Any]:
        return {
            "visible": sorted(self.visible) if self.visible is not None else None,
            "threshold": self.threshold,
            "colours": {str(n): _hex(c) for n, c in sorted(self.colours.items())},
            "opacity": self.opacity,
        }


def parse_view(query: Any, numbers: Iterable[int], *, raw_length: int = 0) -> View:
    """A ``View`` from a QueryDict (or any mapping with ``lists()``, or a plain mapping of
    strings), checked against the run's instance numbers. Raises BadView."""
    known = frozenset(numbers)
    if raw_length > MAX_QUERY_LENGTH:
        raise BadView(f"The query string is longer than {MAX_QUERY_LENGTH} characters.")
    items = query.lists() if hasattr(query, "lists") else ((k, [v]) for k, v in query.items())
    values: dict[str, str] = {}
    for name, given in items:
        if name not in PARAMETERS:
            raise BadView(
                f"Unknown parameter {_show(name)}: use {', '.join(PARAMETERS)} (or none)."
            )
        if len(given) != 1:
            raise BadView(f"{name} is given {len(given)} times; give it once.")
        value = given[0]
        if len(value) > MAX_PARAM_LENGTH:
            raise BadView(f"{name} is longer than {MAX_PARAM_LENGTH} characters.")
        values[name] = value
    view: dict[str, Any] = {}
    if "visible" in values:
        view["visible"] = frozenset(_numbers(values["visible"], known))
    if "threshold" in values:
        view["threshold"] = _fraction("threshold", values["threshold"])
    if "colours" in values:
        view["colours"] = _colours(values["colours"], known)
    if "opacity" in values:
        view["opacity"] = _fraction("opacity", values["opacity"])
    return View(**view)


def _show(value: str) -> str:
    return repr(value if len(value) <= 20 else value[:20] + "…")


def _number(what: str, token: str, known: frozenset[int]) -> int:
    token = token.strip()
    if not _NUMBER.fullmatch(token):
        raise BadView(f"{what}: {_show(token)} is not an instance number.")
    number = int(token)
    if number not in known:
        shown = ", ".join(map(str, sorted(known))) or "none"
        raise BadView(f"{what}: this run has no instance {number} (it has {shown}).")
    return number


def _numbers(value: str, known: frozenset[int]) -> list[int]:
    """ "1,3,4" -> [1, 3, 4]; "" -> [] (nothing visible)."""
    if not value.strip():
        return []
    return [_number("visible", token, known) for token in value.split(",")]


def _fraction(name: str, value: str) -> float:
    text = value.strip()
    if not _FRACTION.fullmatch(text):
        raise BadView(f"{name} is a number from 0 to 1, such as 0.5, not {_show(value)}.")
    number = float(text)
    if not 0.0 <= number <= 1.0:
        raise BadView(f"{name} is a number from 0 to 1, not {_show(value)}.")
    return number


def _colours(value: str, known: frozenset[int]) -> dict[int, tuple[int, int, int]]:
    """ "1:ff0000,3:00aa00" -> {1: (255, 0, 0), 3: (0, 170, 0)}; "" -> {}."""
    colours: dict[int, tuple[int, int, int]] = {}
    if not value.strip():
        return colours
    for pair in value.split(","):
        number_text, sep, colour_text = pair.partition(":")
        if not sep:
            raise BadView(f"colours: {_show(pair)} is not instance:colour, such as 1:ff0000.")
        number = _number("colours", number_text, known)
        match = _HEX.fullmatch(colour_text.strip())
        if not match:
            raise BadView(
                f"colours: {_show(colour_text)} is not a colour as 6 hex digits, such as ff0000."
            )
        if number in colours:
            raise BadView(f"colours: instance {number} is given two colours.")
        colours[number] = tuple(bytes.fromhex(match.group(1)))  # type: ignore[assignment]
    return colours


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


# --- which instances ----------------------------------------------------------------------------

MISSING_FILE = "The stored copy of this mask is missing."


@dataclass
class Instance:
    mask: Mask
    colour: tuple[int, int, int]
    exported: bool
    error: str = ""

    @property
    def number(self) -> int:
        return self.mask.number

    @property
    def file_name(self) -> str:
        return mask_file_name(self.mask.number)

    def not_exported(self, reason: str) -> None:
        self.exported, self.error = False, reason


def mask_file_name(number: int) -> str:
    return f"mask-{number:02d}.png"


def select(masks: Iterable[Mask], view: View) -> tuple[list[Instance], list[int]]:
    """The instances the view shows, in order, and the numbers of those it hides. A mask that
    could not be copied is kept, with ``exported`` False and the reason."""
    shown: list[Instance] = []
    hidden: list[int] = []
    for mask in masks:
        if not view.shows(mask):
            hidden.append(mask.number)
            continue
        if not mask.file:
            error = mask.error or "This mask was not copied."
        elif not mask.file.storage.exists(mask.file.name or ""):  # deleted since: say so
            error = MISSING_FILE
        else:
            error = ""
        shown.append(Instance(mask, view.colour(mask), not error, error))
    return shown, hidden


def has_masks(masks: Iterable[Mask]) -> bool:
    return any(m.file for m in masks)


class _MissingMask(Exception):
    pass


def _read_mask(mask: Mask) -> bytes:
    try:
        return read_file(mask.file)
    except FileNotFoundError:
        raise _MissingMask from None


def _mask_image(data: bytes, size: tuple[int, int]) -> Image.Image:
    """Our stored mask as a mode "1" image at ``size``: as it is for our own copies; anything
    else (an older copy, another mode) is thresholded and stretched (nearest)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        mask = im if im.mode == "1" else im.convert("L").point(_THRESHOLD, "1")
        if mask.size != size:
            mask = mask.resize(size, Image.Resampling.NEAREST)
        return mask.copy() if mask is im else mask


def _is_plain_mask(data: bytes, size: tuple[int, int]) -> bool:
    """Whether stored bytes are already what the ZIP promises: a 1-bit PNG at ``size``."""
    try:
        with Image.open(io.BytesIO(data)) as im:  # the header only
            return im.format == "PNG" and im.mode == "1" and im.size == size
    except Exception:
        return False


def _masks(instances: Iterable[Instance], size: tuple[int, int]) -> Iterator[tuple[Instance, Any]]:
    """(instance, mask image) for each exported instance, one decoded mask at a time; a stored
    file that has gone missing turns its instance into a not-exported one."""
    for inst, data in _stored_masks(instances):
        yield inst, _mask_image(data, size)


def _stored_masks(instances: Iterable[Instance]) -> Iterator[tuple[Instance, bytes]]:
    """(instance, stored PNG bytes) for each exported instance whose file is still there."""
    for inst in instances:
        if not inst.exported:
            continue
        try:
            data = _read_mask(inst.mask)
        except _MissingMask:
            inst.not_exported(MISSING_FILE)
            continue
        yield inst, data


# --- JSON ---------------------------------------------------------------------------------------

PROMPT_KEYS = ("prompt", "point_prompts", "box_prompts")


def run_json(
    run: Run,
    instances: Sequence[Instance],
    hidden: Sequence[int],
    view: View,
    *,
    in_zip: bool = False,
    absolute: Callable[[str], str] = str,
) -> dict[str, Any]:
    """Everything about the run and its instances, as the person asked and sees it.

    ``in_zip``: each exported instance names its file in the ZIP; otherwise its download URL
    (made absolute by ``absolute``, e.g. ``request.build_absolute_uri``)."""
    image = run.image
    options = {k: v for k, v in run.input.items() if k not in PROMPT_KEYS and k != "image_url"}
    rows = []
    for inst in instances:
        mask = inst.mask
        row: dict[str, Any] = {
            "number": mask.number,
            "score": mask.score,
            "box": list(mask.box) if mask.box else None,
            "area": mask.area,
            "colour": _hex(inst.colour),
            "exported": inst.exported,
        }
        if inst.exported:
            if in_zip:
                row["file"] = inst.file_name
            else:
                row["url"] = absolute(reverse("mask_file", args=[run.pk, mask.number]))
        else:
            row["error"] = inst.error
        rows.append(row)
    return {
        "run": {
            "id": str(run.pk),
            "url": absolute(run.get_absolute_url()),
            "created_at": run.created_at.isoformat(),
            "owner": run.owner.get_username() if run.owner else None,
            "status": run.status,
            "runflow_run_id": run.provider_run_id or None,
            "duration_ms": run.duration_ms,
            "cost": str(run.cost) if run.cost is not None else None,
            "image": {
                "name": image_name(run),
                "width": image.width,
                "height": image.height,
                "content_type": image.content_type,
            },
        },
        "prompts": {"text": run.prompt, "points": run.points, "boxes": run.boxes},
        "options": options,
        "metadata": run.metadata,
        "view": view.describe(),
        "instances": rows,
        "hidden": list(hidden),
        "box_format": "[x_min, y_min, x_max, y_max] in pixels of the upright image, max exclusive",
    }


def image_name(run: Run) -> str:
    image = run.image
    if image.original_name:
        return image.original_name
    extension = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}.get(
        image.content_type, (image.file.name or ".img").rsplit(".", 1)[-1]
    )
    return f"{image.sha256[:12]}.{extension}"


def dumps(data: Any) -> bytes:
    return json.dumps(data, indent=2, ensure_ascii=False).encode()


# --- ZIP ----------------------------------------------------------------------------------------


def write_zip(
    run: Run,
    instances: Sequence[Instance],
    hidden: Sequence[int],
    view: View,
    out: IO[bytes],
    *,
    absolute: Callable[[str], str] = str,
) -> None:
    """Every exported mask as ``mask-NN.png`` (a 1-bit PNG at the image's size, our stored copy
    byte for byte), then ``instances.json``. PNGs are stored (they are already compressed), the
    JSON deflated. One mask in memory at a time."""
    size = (run.image.width, run.image.height)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for inst, data in _stored_masks(instances):
            if not _is_plain_mask(data, size):
                buf = io.BytesIO()
                _mask_image(data, size).save(buf, "PNG")
                data = buf.getvalue()
            archive.writestr(inst.file_name, data, compress_type=zipfile.ZIP_STORED)
            del data
        description = run_json(run, instances, hidden, view, in_zip=True, absolute=absolute)
        archive.writestr("instances.json", dumps(description))


# --- COCO ---------------------------------------------------------------------------------------


def coco_json(
    run: Run,
    instances: Sequence[Instance],
    view: View,
    *,
    absolute: Callable[[str], str] = str,
) -> dict[str, Any]:
    """COCO instance segmentation with one image (id 1) and one category (id 1, the text
    prompt or "object"). Each exported instance is an annotation (its id is the instance
    number) with a compressed RLE, its area and [x, y, w, h] box computed from the mask itself,
    ``iscrowd`` 0 and, where SAM 3 gave one, its ``score``."""
    image = run.image
    size = (image.width, image.height)
    annotations = []
    for inst, mask in _masks(instances, size):
        counts = rle_counts(mask)
        bbox = mask.getbbox()
        del mask
        x0, y0, x1, y1 = bbox or (0, 0, 0, 0)
        annotation: dict[str, Any] = {
            "id": inst.number,
            "image_id": 1,
            "category_id": 1,
            "segmentation": {"size": [size[1], size[0]], "counts": rle_string(counts)},
            "area": rle_area(counts),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "iscrowd": 0,
        }
        if inst.mask.score is not None:
            annotation["score"] = inst.mask.score
        annotations.append(annotation)
    return {
        "info": {
            "description": f"SAM 3 run {run.pk}" + (f": {run.prompt}" if run.prompt else ""),
            "url": absolute(run.get_absolute_url()),
            "date_created": run.created_at.isoformat(),
            "contributor": run.owner.get_username() if run.owner else "",
            "view": view.describe(),
            "not_exported": [
                {"number": inst.number, "reason": inst.error}
                for inst in instances
                if not inst.exported
            ],
        },
        "licenses": [],
        "images": [
            {"id": 1, "file_name": image_name(run), "width": image.width, "height": image.height}
        ],
        "categories": [{"id": 1, "name": run.prompt or "object", "supercategory": ""}],
        "annotations": annotations,
    }


# --- composite ----------------------------------------------------------------------------------


def composite_png(run: Run, instances: Sequence[Instance], view: View) -> bytes:
    """The image as the person sees it with the shown masks painted in their colours at the
    view's opacity (later masks over earlier ones, as on the run page: overlaps do not darken),
    then each instance's box and a "#n score" tag, drawn as the run page draws them. Same size
    as the image; RGB, or RGBA when the image has transparency."""
    image = run.image
    size = (image.width, image.height)
    base = _upright(run)
    keep_alpha = base.mode == "RGBA"
    base = base.convert("RGBA") if not keep_alpha else base
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    drawn: list[tuple[Instance, tuple[int, int, int, int]]] = []
    for inst, mask in _masks(instances, size):
        box = mask.getbbox()
        if box is not None:
            # Only the mask's box: full-frame pastes of a phone photo's masks add up.
            layer.paste((*inst.colour, view.alpha), box, mask.crop(box))
            drawn.append((inst, box))
        del mask
    out = Image.alpha_composite(base, layer)
    del base, layer
    _draw_boxes(out, drawn)
    if not keep_alpha:
        out = out.convert("RGB")
    buf = io.BytesIO()
    # Level 3 is much faster than the default 6 on a 12-megapixel photo, for a few % more bytes.
    out.save(buf, "PNG", compress_level=3)
    return buf.getvalue()


def _upright(run: Run) -> Image.Image:
    """The stored image, decoded, upright, RGB or RGBA, at the image's recorded size."""
    image = run.image
    with image.file.open("rb") as f, Image.open(f) as im:
        im.load()
        turn = orientation(im)
        out = im if im.mode in ("RGB", "RGBA") else displayable(im)
        if out.mode not in ("RGB", "RGBA"):
            out = out.convert("RGBA" if "A" in out.mode else "RGB")
        if turn != 1:
            out = out.transpose(EXIF_TRANSPOSE[turn])
        if out is im:
            out = im.copy()
    if out.size != (image.width, image.height):
        out = out.resize((image.width, image.height), Image.Resampling.BILINEAR)
    return out


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_boxes(
    out: Image.Image, drawn: Sequence[tuple[Instance, tuple[int, int, int, int]]]
) -> None:
    """Boxes and tags sized as on the run page: stroke scale/300, font scale/40."""
    width, height = out.size
    scale = max(width, height)
    stroke = max(1, round(scale / 300))
    font_size = max(10, round(scale / 40))
    font = _font(font_size)
    tag_h = round(font_size * 1.35)
    pad = round(font_size * 0.25)
    draw = ImageDraw.Draw(out)
    for inst, (x0, y0, x1, y1) in drawn:
        colour = (*inst.colour, 255)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=stroke)
    for inst, (x0, y0, _x1, _y1) in drawn:
        score = inst.mask.score
        label = f"#{inst.number}" + (f" {score:.2f}" if score is not None else "")
        tag_w = round(draw.textlength(label, font=font)) + 2 * pad
        tx = max(0, min(x0, width - tag_w))
        ty = y0 - tag_h if y0 >= tag_h else y0  # above the box, inside it at the top edge
        draw.rectangle((tx, ty, tx + tag_w - 1, ty + tag_h - 1), fill=(*inst.colour, 255))
        draw.text((tx + pad, ty + tag_h / 2), label, font=font, fill=_ink(inst.colour), anchor="lm")


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """White on dark tags, near-black on light ones (a colour override may be yellow)."""
    r, g, b = colour
    return (17, 24, 39, 255) if 0.299 * r + 0.587 * g + 0.114 * b > 170 else (255, 255, 255, 255)


# --- download names -----------------------------------------------------------------------------


def download_name(run: Run, extension: str) -> str:
    """ "<prompt-slug>-<run id short>.<extension>", ASCII only."""
    slug = slugify(run.prompt)[:40].strip("-") or "points-and-boxes"
    return f"{slug}-{run.pk.hex[:8]}.{extension}"
