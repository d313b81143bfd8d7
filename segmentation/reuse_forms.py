"""Same prompts on other images: the form that takes the images and decides, per image, what
of an earlier run's prompt can be sent with it.

Every image goes through the run form itself (RunForm), so an upload or a URL is checked
exactly as on the new-run page (type by content, size and pixel limits, EXIF orientation,
SSRF-safe fetching), stored and staged the same way, and every new run is validated by the
same rules as one typed in by hand. This module only adds what is particular to reuse: many
images at once, and points and boxes made for another image's pixels."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.core import signing

from .forms import RunForm
from .models import Run, SourceImage

# Each image becomes its own run, billed by Runflow, and is taken in (decoded, or fetched)
# while the person waits: 20 keeps one submission quick to check and quick to answer.
MAX_IMAGES = 20
# What the person chose as a name travels with the run form's own staged token; signed again
# so the page cannot be made to show another name for an image.
KEPT_SALT = "sam3web.reuse-kept-image"
KEPT_MAX_AGE = 7 * 24 * 3600
OPTION_NAMES = Run.OPTION_NAMES
BOOLEAN_OPTIONS = frozenset(
    name for name in OPTION_NAMES if isinstance(RunForm.base_fields[name], forms.BooleanField)
)

KEEP, DROP, SCALE = "keep", "drop", "scale"
FIT_CHOICES = [
    (KEEP, "Keep them at the same pixels, and stop if any lies outside an image"),
    (DROP, "Drop the points and boxes that lie outside an image"),
    (SCALE, "Scale them to each image’s size (the same place relative to the image)"),
]


# --- points and boxes on another image ------------------------------------------------------


def point_fits(p: dict[str, int], width: int, height: int) -> bool:
    return 0 <= p["x"] < width and 0 <= p["y"] < height


def box_fits(b: dict[str, int], width: int, height: int) -> bool:
    # x_max/y_max are exclusive edges, as in the run form: a box may reach the image's edge.
    return min(b["x_min"], b["y_min"]) >= 0 and b["x_max"] <= width and b["y_max"] <= height


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


# --- the images -----------------------------------------------------------------------------


class MultipleFileInput(forms.FileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.Field):
    """Several uploads, returned as they came: each is checked by the run form's own image
    field, so its messages can name the file."""

    widget = MultipleFileInput

    def to_python(self, data: Any) -> list[Any]:
        if not data:
            return []
        files = data if isinstance(data, list | tuple) else [data]
        return [f for f in files if f]


class KeptField(forms.Field):
    """Images taken in by an earlier POST of this form: ticked checkboxes, one per image."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> list[str]:
        if not value:
            return []
        values = value if isinstance(value, list | tuple) else [value]
        return [str(v) for v in values if v]


@dataclass
class Taken:
    """One image ready to run: stored, with the run form's staged token and the name the
    person knows it by."""

    image: SourceImage
    token: str  # RunForm's staged-image token
    name: str
    placement: Placement = field(default_factory=lambda: Placement([], []))
    run_form: RunForm | None = None

    @property
    def kept_value(self) -> str:
        return signing.dumps([self.token, self.name], salt=KEPT_SALT)


def _errors_of(form: RunForm, *names: str) -> list[str]:
    return [str(e) for name in names for e in form.errors.get(name, [])]


class ReuseForm(forms.Form):
    images = MultipleFileField(
        required=False,
        label="Image files",
        help_text=f"Choose up to {MAX_IMAGES} images (JPEG, PNG, WebP, GIF or AVIF, "
        "up to 50 MiB each).",
    )
    image_urls = forms.CharField(
        required=False,
        label="or image URLs",
        max_length=MAX_IMAGES * 2100,
        widget=forms.Textarea(
            attrs={
                "rows": 3,
                "spellcheck": "false",
                "class": "mono",
                "placeholder": "https://example.com/one.jpg\nhttps://example.com/two.png",
            }
        ),
        help_text="One per line. The server downloads them itself.",
    )
    kept = KeptField(required=False)
    fit = forms.ChoiceField(
        required=False,
        choices=FIT_CHOICES,
        initial=KEEP,
        label="Points and boxes",
        widget=forms.RadioSelect,
    )

    def __init__(self, *args: Any, source: Run, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source = source
        self.user = user
        self.taken: list[Taken] = []
        self.duplicates: list[str] = []
        if not (source.points or source.boxes):
            del self.fields["fit"]

    def clean_image_urls(self) -> list[str]:
        text = self.cleaned_data.get("image_urls") or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if {"images", "image_urls", "kept"} & set(self.errors):
            return cleaned
        uploads: list[Any] = cleaned.get("images") or []
        urls: list[str] = cleaned.get("image_urls") or []
        kept: list[str] = cleaned.get("kept") or []
        # Images kept from an earlier try first, and whatever else goes wrong: they are
        # cheap to take again (a signature and a lookup), and must not be lost.
        for value in kept[:MAX_IMAGES]:
            self._take_kept(value)
        total = len(uploads) + len(urls) + len(kept)
        if total == 0:
            self.add_error("images", "Choose one or more image files, or paste image URLs.")
            return cleaned
        if total > MAX_IMAGES:
            self.add_error(
                "images",
                f"At most {MAX_IMAGES} images at a time (you gave {total}): each one becomes "
                "a run of its own, billed by Runflow. Start the rest in another batch.",
            )
            return cleaned
        # Take every image in, even after a bad one, so that the good ones are kept for the
        # page shown again and the person only replaces what was wrong.
        for upload in uploads:
            self._take(upload.name, files={"image": upload}, error_field="images")
        for n, url in enumerate(urls, start=1):
            self._take(url, data={"image_url": url}, error_field="image_urls", line=n)
        # Where the prompts do not fit is told even beside a broken file: one round trip.
        self._place_prompts(cleaned.get("fit") or KEEP)
        if not self.errors:
            self._build_runs()
        return cleaned

    def _take_kept(self, value: str) -> None:
        try:
            token, name = signing.loads(value, salt=KEPT_SALT, max_age=KEPT_MAX_AGE)
        except (signing.BadSignature, ValueError, TypeError):
            self.add_error(
                "images", "An image kept from before has expired: choose that image again."
            )
            return
        self._take(str(name), data={"staged_image": token}, error_field="images")

    def _take(
        self,
        name: str,
        *,
        data: dict[str, str] | None = None,
        files: dict[str, Any] | None = None,
        error_field: str,
        line: int = 0,
    ) -> None:
        # The run form takes the image in exactly as on the new-run page (and stores it, so it
        # can be kept); its other fields are left empty and their complaints ignored here.
        intake = RunForm(data or {}, files or {}, user=self.user)
        intake.is_valid()
        problems = _errors_of(intake, "image", "image_url")
        if problems or intake.source_image is None:
            label = f"Line {line} ({name[:80]})" if line else name
            reason = " ".join(problems) or "This image could not be taken in."
            if data and "staged_image" in data:
                reason = "It was kept from before, but has expired: choose it again."
            self.add_error(error_field, f"{label}: {reason}")
            return
        image = intake.source_image
        if any(t.image.pk == image.pk for t in self.taken):
            self.duplicates.append(name)
            return
        if line:  # a URL: the person knows it by its last part
            name = name.rstrip("/").rsplit("/", 1)[-1] or name
        self.taken.append(Taken(image=image, token=intake.staged_token(), name=name[:255]))

    def _place_prompts(self, fit: str) -> None:
        has_text = bool(self.source.prompt)
        for t in self.taken:
            t.placement = place(
                self.source, (t.image.width, t.image.height), t.name, fit, has_text=has_text
            )
            if t.placement.error:
                self.add_error(None, t.placement.error)

    def run_data(self, taken: Taken) -> dict[str, str]:
        """The new-run form's fields as the source run had them, with this image's points
        and boxes, as if typed in by hand."""
        source = self.source
        data: dict[str, str] = {
            "staged_image": taken.token,
            "prompt": source.prompt,
            "point_prompts": json.dumps(taken.placement.points) if taken.placement.points else "",
            "box_prompts": json.dumps(taken.placement.boxes) if taken.placement.boxes else "",
            "metadata": json.dumps(source.metadata) if source.metadata else "",
            "parent": str(source.pk),
        }
        for name in OPTION_NAMES:
            value = source.input.get(name, RunForm.base_fields[name].initial)
            if name in BOOLEAN_OPTIONS:
                if value:
                    data[name] = "on"
            elif value is not None:
                data[name] = str(value)
        return data

    def _build_runs(self) -> None:
        for t in self.taken:
            run_form = RunForm(self.run_data(t), user=self.user)
            if not run_form.is_valid():
                # The source run was valid on its own image; tell what the run form says.
                reasons = "; ".join(str(e) for errors in run_form.errors.values() for e in errors)
                self.add_error(None, f"{t.name} cannot be run with this prompt: {reasons}")
            t.run_form = run_form

    def notes(self) -> list[str]:
        notes = [t.placement.note for t in self.taken if t.placement.note]
        if self.duplicates:
            notes.append(f"Given more than once, run once: {', '.join(self.duplicates)}.")
        return notes
