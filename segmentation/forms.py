"""The forms people submit runs with. They validate and nothing else: SAM 3's rules are
``schema``'s, images go through ``imaging``, and ``runs.create_run`` stores what a valid form
describes.

* ``RunForm``: one field per field of SAM 3's input schema, named as in the schema. Points,
  boxes and metadata arrive as JSON text (typed, or filled in by the prompt editor).
* ``ReuseForm``: an earlier run's prompt and options on other images.

A valid image survives an error elsewhere in the form: it is stored when taken in, and the page
shown again carries a signed reference to it (``stage``), so nothing chosen is chosen twice."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.conf import settings
from django.core import signing

from segmentation import reuse, schema
from segmentation.imaging import decode
from segmentation.imaging.decode import ACCEPTED_FORMATS_TEXT, ImageRejected
from segmentation.imaging.intake import intake_upload, intake_url
from segmentation.imaging.store import store_image
from segmentation.models import Run, SourceImage

MAX_JSON_CHARS = 200_000
STAGED_SALT = "sam3web.staged-image"
STAGED_MAX_AGE = 7 * 24 * 3600
# Each image of a reuse becomes its own run, billed by Runflow, and is taken in (decoded, or
# fetched) while the person waits: 20 keeps one submission quick to check and quick to answer.
MAX_REUSE_IMAGES = 20


# --- images taken in, kept across round trips -------------------------------------------------


@dataclass(frozen=True)
class Staged:
    image: SourceImage
    source_url: str  # where it came from when it was a URL, else ""
    name: str  # what the person knows it by


def stage(image: SourceImage, source_url: str = "", name: str = "") -> str:
    """A signed reference to an image already taken in. The URL travels signed too: it decides
    what Runflow is sent, so it must not be something other than where the image came from."""
    return signing.dumps([image.pk, source_url, name], salt=STAGED_SALT)


def unstage(token: str) -> Staged | None:
    """The image a ``stage`` token names; None for a forged, expired or unknown one."""
    if not token:
        return None
    try:
        value = signing.loads(token, salt=STAGED_SALT, max_age=STAGED_MAX_AGE)
    except signing.BadSignature:
        return None
    if not (isinstance(value, list) and len(value) == 3):
        return None
    image = SourceImage.objects.filter(pk=value[0]).first()
    if image is None:
        return None
    return Staged(image, str(value[1])[:2000], str(value[2])[:255])


def take_image(upload: Any, url: str) -> SourceImage:
    """An uploaded file or an image URL through intake, stored. Raises ImageRejected."""
    result = intake_upload(upload) if upload else intake_url(url)
    name = getattr(upload, "name", "") or url.rsplit("/", 1)[-1]
    return store_image(result, original_name=name[:255])


# --- fields ---------------------------------------------------------------------------------


def _parse_json(text: str) -> Any:
    """JSON typed into a text box; empty means null."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(
            f"This is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})."
        ) from None


class SchemaJSONField(forms.CharField):
    """JSON in a text box, checked by one of schema's functions (its first issue is shown)."""

    def __init__(self, *, check: Callable[[Any], Any], **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", MAX_JSON_CHARS)
        kwargs.setdefault(
            "widget", forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"})
        )
        super().__init__(**kwargs)
        self.check = check

    def to_python(self, value: Any) -> Any:
        if isinstance(value, list | dict):  # an initial value from an earlier run
            parsed: Any = value
        else:
            parsed = _parse_json(super().to_python(value) or "")
        try:
            return self.check(parsed)
        except schema.SchemaError as exc:
            raise forms.ValidationError(exc.first().msg) from None

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return json.dumps(value) if value else ""
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False)
        return value


class SubmissionKeyField(forms.CharField):
    """The form's one-time key, made when the page is shown: the same form posted twice
    makes its runs once (see runs.create_run)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("widget", forms.HiddenInput)
        super().__init__(**kwargs)

    @staticmethod
    def new() -> str:
        return uuid.uuid4().hex


def option_field(option: schema.Option, **kwargs: Any) -> forms.Field:
    """The form field for one of SAM 3's options, with schema's limits."""
    if option.kind is bool:
        return forms.BooleanField(
            required=False, initial=option.initial, help_text=option.help, **kwargs
        )
    if option.kind is int:
        return forms.IntegerField(
            min_value=option.minimum,
            max_value=option.maximum,
            initial=option.initial,
            label=option.label,
            help_text=option.help,
            **kwargs,
        )
    return forms.ChoiceField(
        choices=option.choices, initial=option.initial, help_text=option.help, **kwargs
    )


def image_checks() -> dict[str, str]:
    """What the page checks a chosen image file against before showing it, as attributes of
    the file input: the server's own limits, and its refusals in its own words (intake refuses
    the same files the same way when they get past the browser)."""
    max_bytes = int(settings.SAM3WEB_MAX_IMAGE_BYTES)
    max_pixels = decode.max_pixels()
    refusals = {
        "empty": decode.MSG_EMPTY,
        "too_large": f"This file is larger than the {decode.size_text(max_bytes)} limit.",
        "too_many_pixels": "This image is {size} pixels ({megapixels} megapixels); "
        f"the limit is {max_pixels / 1_000_000:g} megapixels.",
        "no_pixels": decode.MSG_NO_PIXELS,
        "not_image": decode.MSG_NOT_IMAGE,
        "web_page": decode.MSG_WEB_PAGE,
        "svg": decode.MSG_SVG,
        "unsupported": f"{{format}} images are not supported. Please use {ACCEPTED_FORMATS_TEXT}.",
    }
    return {
        "data-max-bytes": str(max_bytes),
        "data-max-pixels": str(max_pixels),
        "data-refusals": json.dumps(refusals, ensure_ascii=False),
    }


# --- the run form ---------------------------------------------------------------------------


class OptionsForm(forms.Form):
    """SAM 3's options, as the run form (and the batch form) ask for them."""

    apply_mask = option_field(schema.OPTIONS_BY_NAME["apply_mask"])
    return_multiple_masks = option_field(schema.OPTIONS_BY_NAME["return_multiple_masks"])
    # Only read with return_multiple_masks: the page disables it while that is off, and a
    # disabled field is not posted (see clean_max_masks).
    max_masks = option_field(schema.OPTIONS_BY_NAME["max_masks"], required=False)
    include_scores = option_field(schema.OPTIONS_BY_NAME["include_scores"])
    include_boxes = option_field(schema.OPTIONS_BY_NAME["include_boxes"])
    sync_mode = option_field(schema.OPTIONS_BY_NAME["sync_mode"])
    output_format = option_field(schema.OPTIONS_BY_NAME["output_format"])

    # Shown folded unless they hold something (see ``advanced_open``).
    ADVANCED = ("apply_mask", "sync_mode", "output_format")

    def advanced_open(self) -> bool:
        """Whether the folded options hold an error or a value changed from the form's start."""
        return any(
            name in self.errors
            or self.fields[name].to_python(self[name].value())
            != schema.OPTIONS_BY_NAME[name].initial
            for name in self.ADVANCED
        )

    def clean_max_masks(self) -> int | None:
        value = self.cleaned_data.get("max_masks")
        if value is not None:
            return value
        if self.cleaned_data.get("return_multiple_masks"):
            raise forms.ValidationError(
                self.fields["max_masks"].error_messages["required"], code="required"
            )
        # Not posted while multiple masks is off: kept as the form would have posted it.
        return self.get_initial_for_field(self.fields["max_masks"], "max_masks")


class RunForm(OptionsForm):
    # The image and prompts first, then the options (OptionsForm's), then the rest.
    field_order = ["image", "image_url", "prompt", "text_prompt", "point_prompts", "box_prompts"]

    image = forms.FileField(
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
        help_text=f"{ACCEPTED_FORMATS_TEXT}, up to 50 MiB.",
    )
    image_url = forms.URLField(
        required=False,
        max_length=2000,
        assume_scheme="https",
        label="or image URL",
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/photo.jpg"}),
    )
    prompt = forms.CharField(
        required=False,
        max_length=schema.MAX_PROMPT_CHARS,
        label="Text prompt",
        widget=forms.TextInput(attrs={"placeholder": "e.g. cat, keyboard, person in red"}),
    )
    # Deprecated alias of `prompt` in the schema; accepted so old links and scripts still work.
    text_prompt = forms.CharField(
        required=False, max_length=schema.MAX_PROMPT_CHARS, widget=forms.HiddenInput
    )
    point_prompts = SchemaJSONField(
        check=schema.clean_points,
        label="Point prompts",
        help_text='JSON list: {"x", "y", "label": 1 include / 0 exclude, "object_id"?}, '
        "in pixels of the image as shown.",
    )
    box_prompts = SchemaJSONField(
        check=schema.clean_boxes,
        label="Box prompts",
        help_text='JSON list: {"x_min", "y_min", "x_max", "y_max", "object_id"?}, in pixels. '
        "Boxes sharing an object_id refine one object.",
    )
    metadata = SchemaJSONField(
        check=schema.clean_metadata,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "class": "mono"}),
        help_text="Optional notes kept with the run, as JSON names and values (no lists or "
        'nested objects), e.g. {"project": "demo"}.',
    )
    # Set when the form was opened from an earlier run ("Edit as a new run").
    parent = forms.ModelChoiceField(
        queryset=Run.objects.all(), required=False, widget=forms.HiddenInput
    )
    submission_key = SubmissionKeyField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source_image: SourceImage | None = None
        self.source_url = ""  # where source_image came from, when it was a URL
        self.input: dict[str, Any] = {}  # SAM 3's input, once the form is valid
        # Read when the page is made, so a changed setting is what the page checks against.
        self.fields["image"].widget.attrs.update(image_checks())

    def open_sections(self) -> set[str]:
        """The folded parts of the page to show open: those with an error, or with something
        in them a person would want to see (prompts as JSON, metadata, an option changed from
        what the form starts with)."""
        opened = set()
        if {"point_prompts", "box_prompts"} & set(self.errors) or any(
            self[name].value() for name in ("point_prompts", "box_prompts")
        ):
            opened.add("json")
        if "metadata" in self.errors or self["metadata"].value():
            opened.add("metadata")
        if self.advanced_open():
            opened.add("advanced")
        return opened

    def staged_token(self) -> str:
        """The image already taken in, for the page shown again (see ``stage``)."""
        if self.source_image is None:
            return ""
        return stage(self.source_image, self.source_url)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        self._clean_image(cleaned)
        size = (self.source_image.width, self.source_image.height) if self.source_image else None
        prompts_broken = {"point_prompts", "box_prompts"} & set(self.errors)
        data = {
            name: cleaned.get(name)
            for name in ("prompt", "text_prompt", "point_prompts", "box_prompts")
        }
        data.update({name: cleaned.get(name) for name in schema.OPTION_NAMES})
        try:
            self.input = schema.validate_input(
                data, image_size=size, require_prompt=not prompts_broken
            )
        except schema.SchemaError as exc:
            for name, messages in exc.by_field().items():
                if name not in self.errors:
                    self.add_error(name if name in self.fields else None, messages[0])
        return cleaned

    def _clean_image(self, cleaned: dict[str, Any]) -> None:
        upload = cleaned.get("image")
        url = cleaned.get("image_url") or ""
        if upload and url:
            self.add_error("image_url", "Give either a file or a URL, not both: clear one of them.")
        elif upload or url:
            if "image_url" not in self.errors:
                try:
                    self.source_image = take_image(upload, url)
                except ImageRejected as exc:
                    self.add_error("image" if upload else "image_url", exc.message)
                # Remember where a URL image came from: Runflow may get that URL instead.
                self.source_url = "" if upload else url
        elif "image_url" not in self.errors:
            staged = unstage(self.data.get("staged_image", ""))
            if staged is None:
                self.add_error("image", "Choose an image file or paste an image URL.")
            else:
                self.source_image, self.source_url = staged.image, staged.source_url


# --- same prompts on other images -------------------------------------------------------------


class MultipleFileInput(forms.FileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.Field):
    """Several uploads, returned as they came: each is checked by intake, so its messages can
    name the file."""

    widget = MultipleFileInput

    def to_python(self, data: Any) -> list[Any]:
        if not data:
            return []
        files = data if isinstance(data, list | tuple) else [data]
        return [f for f in files if f]


URL_LINES_HELP = "One per line. The server downloads them itself."


def url_lines() -> forms.Textarea:
    """The box for image URLs, one per line (the reuse and batch forms)."""
    return forms.Textarea(
        attrs={
            "rows": 3,
            "spellcheck": "false",
            "class": "mono",
            "placeholder": "https://example.com/one.jpg\nhttps://example.com/two.png",
        }
    )


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
    """One image ready to run: stored, with the name the person knows it by, where the
    source run's points and boxes land on it, and the input to send with it."""

    image: SourceImage
    source_url: str
    name: str
    placement: reuse.Placement = field(default_factory=lambda: reuse.Placement([], []))
    input: dict[str, Any] = field(default_factory=dict)

    @property
    def kept_value(self) -> str:
        return stage(self.image, self.source_url, self.name)


class ReuseForm(forms.Form):
    images = MultipleFileField(
        required=False,
        label="Image files",
        help_text=f"Choose up to {MAX_REUSE_IMAGES} images ({ACCEPTED_FORMATS_TEXT}, "
        "up to 50 MiB each).",
    )
    image_urls = forms.CharField(
        required=False,
        label="or image URLs",
        max_length=MAX_REUSE_IMAGES * 2100,
        widget=url_lines(),
        help_text=URL_LINES_HELP,
    )
    kept = KeptField(required=False)
    submission_key = SubmissionKeyField()
    fit = forms.ChoiceField(
        required=False,
        choices=reuse.FIT_CHOICES,
        # The choice that starts runs on every image; keeping the pixels (and stopping where
        # they do not fit) is for those who know the images share one size. A POST without a
        # choice still keeps them: nothing is moved that the person did not ask to move.
        initial=reuse.SCALE,
        label="Points and boxes",
        widget=forms.RadioSelect,
    )

    def __init__(self, *args: Any, source: Run, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source = source
        self.taken: list[Taken] = []
        self.duplicates: list[str] = []
        if not (source.points or source.boxes):
            del self.fields["fit"]

    def clean_image_urls(self) -> list[str]:
        text = self.cleaned_data.get("image_urls") or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if {"images", "image_urls", "kept"} & set(self.errors):
            return cleaned
        uploads: list[Any] = cleaned.get("images") or []
        urls: list[str] = cleaned.get("image_urls") or []
        kept: list[str] = cleaned.get("kept") or []
        # Images kept from an earlier try first, and whatever else goes wrong: they are
        # cheap to take again (a signature and a lookup), and must not be lost.
        for value in kept[:MAX_REUSE_IMAGES]:
            staged = unstage(value)
            if staged is None:
                self.add_error(
                    "images", "An image kept from before has expired: choose that image again."
                )
            else:
                self._add(staged.image, staged.source_url, staged.name)
        total = len(uploads) + len(urls) + len(kept)
        if total == 0:
            self.add_error("images", "Choose one or more image files, or paste image URLs.")
            return cleaned
        if total > MAX_REUSE_IMAGES:
            self.add_error(
                "images",
                f"At most {MAX_REUSE_IMAGES} images at a time (you gave {total}): each one "
                "becomes a run of its own, billed by Runflow. Start the rest in another batch.",
            )
            return cleaned
        # Take every image in, even after a bad one, so that the good ones are kept for the
        # page shown again and the person only replaces what was wrong.
        for upload in uploads:
            try:
                self._add(take_image(upload, ""), "", upload.name)
            except ImageRejected as exc:
                self.add_error("images", f"{upload.name}: {exc.message}")
        for n, url in enumerate(urls, start=1):
            try:
                image = take_image(None, url)
            except ImageRejected as exc:
                self.add_error("image_urls", f"Line {n} ({url[:80]}): {exc.message}")
                continue
            # A URL: the person knows it by its last part.
            self._add(image, url, url.rstrip("/").rsplit("/", 1)[-1] or url)
        # Where the prompts do not fit is told even beside a broken file: one round trip.
        self._place_prompts(cleaned.get("fit") or reuse.KEEP)
        return cleaned

    def _add(self, image: SourceImage, source_url: str, name: str) -> None:
        if any(t.image.pk == image.pk for t in self.taken):
            self.duplicates.append(name)
            return
        self.taken.append(Taken(image=image, source_url=source_url, name=name[:255]))

    def _place_prompts(self, fit: str) -> None:
        source = self.source
        for t in self.taken:
            size = (t.image.width, t.image.height)
            t.placement = reuse.place(source, size, t.name, fit, has_text=bool(source.prompt))
            if t.placement.error:
                self.add_error(None, t.placement.error)
                continue
            data = {
                # An option the source run left out was Runflow's default for it.
                **{o.name: source.input.get(o.name, o.default) for o in schema.OPTIONS},
                "prompt": source.prompt,
                "point_prompts": t.placement.points,
                "box_prompts": t.placement.boxes,
            }
            try:
                t.input = schema.validate_input(data, image_size=size)
            except schema.SchemaError as exc:
                # The source run was valid on its own image; tell what is wrong on this one.
                reasons = "; ".join(issue.msg for issue in exc.issues)
                self.add_error(None, f"{t.name} cannot be run with this prompt: {reasons}")

    def notes(self) -> list[str]:
        notes = [t.placement.note for t in self.taken if t.placement.note]
        if self.duplicates:
            notes.append(f"Given more than once, run once: {', '.join(self.duplicates)}.")
        return notes
