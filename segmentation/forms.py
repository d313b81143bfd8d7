"""The run form: one field per field of SAM 3's input schema, named as in the schema.

Points, boxes and metadata arrive as JSON text (typed, or filled in by the prompt editor);
custom fields parse and check what can be checked alone, and RunForm.clean() checks what
needs the image (coordinates inside it)."""

from __future__ import annotations

import io
import json
import math
from typing import Any

from django import forms
from django.core import signing
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from PIL import Image

from . import images
from .models import Run, SourceImage

MAX_POINTS = 100
MAX_BOXES = 50
MAX_OBJECT_ID = 63
MAX_PROMPT_CHARS = 1000
MAX_METADATA_KEYS = 32
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 500
MAX_METADATA_BYTES = 4096
MAX_JSON_CHARS = 200_000

OUTPUT_FORMATS = [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WebP")]
STAGED_SALT = "sam3web.staged-image"


def _whole_number(value: Any, what: str) -> int:
    # JSON has no int type of its own: refuse true/false (bools are ints in Python) and 3.5,
    # accept 3.0, and keep numbers to a size a person could mean.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise forms.ValidationError(f"{what} must be a whole number, not {json.dumps(value)}.")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise forms.ValidationError(f"{what} must be a whole number, not {value}.")
        value = int(value)
    if value < 0:
        raise forms.ValidationError(f"{what} must not be negative (got {value}).")
    if value > 1_000_000:
        raise forms.ValidationError(f"{what} is far too large ({value}).")
    return value


def _parse_json(text: str) -> Any:
    """JSON typed into a text box; empty means null."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise forms.ValidationError(
            f"This is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})."
        ) from None


class JSONListField(forms.CharField):
    """A JSON array of objects with known keys; `to_python` parses, `validate` checks items."""

    widget = forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"})
    item_name = "item"
    item_plural = "items"
    max_items = 0
    required_keys: tuple[str, ...] = ()
    optional_keys: tuple[str, ...] = ("object_id",)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", MAX_JSON_CHARS)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[dict[str, int]]:  # type: ignore[override]
        if isinstance(value, list):
            parsed: Any = value
        else:
            parsed = _parse_json(super().to_python(value))
        if parsed is None:
            return []
        if not isinstance(parsed, list):
            raise forms.ValidationError(
                f"Give a JSON list of {self.item_plural}, like {self.example}."
            )
        if len(parsed) > self.max_items:
            raise forms.ValidationError(
                f"At most {self.max_items} {self.item_plural} per run (got {len(parsed)})."
            )
        return [self.clean_item(n, item) for n, item in enumerate(parsed, start=1)]

    def clean_item(self, n: int, item: Any) -> dict[str, int]:
        label = f"{self.item_name.capitalize()} {n}"
        if not isinstance(item, dict):
            raise forms.ValidationError(f"{label} must be an object, like {self.example}.")
        missing = [k for k in self.required_keys if k not in item]
        if missing:
            raise forms.ValidationError(f"{label} is missing {', '.join(missing)}.")
        unknown = sorted(set(item) - set(self.required_keys) - set(self.optional_keys))
        if unknown:
            raise forms.ValidationError(f"{label} has unknown keys: {', '.join(unknown)}.")
        cleaned = {k: _whole_number(item[k], f"{label}: {k}") for k in self.required_keys}
        if item.get("object_id") is not None:
            object_id = _whole_number(item["object_id"], f"{label}: object_id")
            if object_id > MAX_OBJECT_ID:
                raise forms.ValidationError(
                    f"{label}: object_id must be between 0 and {MAX_OBJECT_ID} (got {object_id})."
                )
            cleaned["object_id"] = object_id
        self.check_item(label, cleaned)
        return cleaned

    def check_item(self, label: str, item: dict[str, int]) -> None:
        pass

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return json.dumps(value) if value else ""
        return value


class PointPromptsField(JSONListField):
    item_name = "point"
    item_plural = "points"
    max_items = MAX_POINTS
    required_keys = ("x", "y", "label")
    example = '[{"x": 120, "y": 80, "label": 1}]'

    def check_item(self, label: str, item: dict[str, int]) -> None:
        if item["label"] not in (0, 1):
            raise forms.ValidationError(
                f"{label}: label must be 1 (include) or 0 (exclude), not {item['label']}."
            )


class BoxPromptsField(JSONListField):
    item_name = "box"
    item_plural = "boxes"
    max_items = MAX_BOXES
    required_keys = ("x_min", "y_min", "x_max", "y_max")
    example = '[{"x_min": 10, "y_min": 20, "x_max": 200, "y_max": 180}]'

    def check_item(self, label: str, item: dict[str, int]) -> None:
        if item["x_min"] >= item["x_max"]:
            raise forms.ValidationError(f"{label}: x_min must be less than x_max.")
        if item["y_min"] >= item["y_max"]:
            raise forms.ValidationError(f"{label}: y_min must be less than y_max.")


class MetadataField(forms.CharField):
    """A flat JSON object of bounded size, sent to Runflow as the run's metadata."""

    widget = forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "class": "mono"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", MAX_JSON_CHARS)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> dict[str, Any] | None:  # type: ignore[override]
        if isinstance(value, dict):
            parsed: Any = value
        else:
            parsed = _parse_json(super().to_python(value))
        if parsed is None:
            return None
        if not isinstance(parsed, dict):
            raise forms.ValidationError('Metadata must be a JSON object, like {"project": "demo"}.')
        if len(parsed) > MAX_METADATA_KEYS:
            raise forms.ValidationError(f"At most {MAX_METADATA_KEYS} metadata keys.")
        for key, val in parsed.items():
            if not key or len(key) > MAX_METADATA_KEY_CHARS:
                raise forms.ValidationError(
                    f"Metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters long."
                )
            if isinstance(val, dict | list):
                raise forms.ValidationError(
                    f"Metadata must be flat: the value of “{key}” is a nested {type(val).__name__}."
                )
            if isinstance(val, str) and len(val) > MAX_METADATA_VALUE_CHARS:
                raise forms.ValidationError(
                    f"The value of “{key}” is longer than {MAX_METADATA_VALUE_CHARS} characters."
                )
            if isinstance(val, float) and not math.isfinite(val):
                raise forms.ValidationError(f"The value of “{key}” must be a finite number.")
        if len(json.dumps(parsed, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
            raise forms.ValidationError(f"Metadata must be at most {MAX_METADATA_BYTES} bytes.")
        return parsed

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False)
        return value


class RunForm(forms.Form):
    image = forms.FileField(
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
        help_text="JPEG, PNG, WebP, GIF or AVIF, up to 50 MiB.",
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
        max_length=MAX_PROMPT_CHARS,
        label="Text prompt",
        widget=forms.TextInput(attrs={"placeholder": "e.g. cat, keyboard, person in red"}),
    )
    # Deprecated alias of `prompt` in the schema; accepted so old links and scripts still work.
    text_prompt = forms.CharField(
        required=False, max_length=MAX_PROMPT_CHARS, widget=forms.HiddenInput
    )
    point_prompts = PointPromptsField(
        label="Point prompts",
        help_text='JSON list: {"x", "y", "label": 1 include / 0 exclude, "object_id"?}, '
        "in pixels of the image as shown.",
    )
    box_prompts = BoxPromptsField(
        label="Box prompts",
        help_text='JSON list: {"x_min", "y_min", "x_max", "y_max", "object_id"?}, in pixels. '
        "Boxes sharing an object_id refine one object.",
    )
    apply_mask = forms.BooleanField(
        required=False, initial=True, help_text="Runflow also returns the image with masks drawn."
    )
    return_multiple_masks = forms.BooleanField(
        required=False, initial=False, help_text="Return up to “max masks” masks."
    )
    max_masks = forms.IntegerField(
        min_value=1, max_value=32, initial=3, label="Max masks", help_text="1 to 32."
    )
    include_scores = forms.BooleanField(
        required=False, initial=True, help_text="A confidence score per mask."
    )
    include_boxes = forms.BooleanField(
        required=False, initial=True, help_text="A bounding box per mask."
    )
    sync_mode = forms.BooleanField(
        required=False, initial=False, help_text="Media come back inline as data URIs."
    )
    output_format = forms.ChoiceField(choices=OUTPUT_FORMATS, initial="png")
    metadata = MetadataField(
        help_text='Optional flat JSON object attached to the run, e.g. {"project": "demo"}.'
    )
    # Set when the form was opened from an earlier run ("Edit as a new run").
    parent = forms.ModelChoiceField(
        queryset=Run.objects.all(), required=False, widget=forms.HiddenInput
    )

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.source_image: SourceImage | None = None
        self.source_url = ""  # where source_image came from, when it was a URL

    # --- the image ------------------------------------------------------------------------
    def staged_token(self) -> str:
        """A signed reference to the image already taken in, so a form shown again with
        errors elsewhere does not make the person choose the file again."""
        if self.source_image is None:
            return ""
        # The URL travels signed too: it decides what Runflow is sent, so it must not be
        # something other than where the image really came from.
        return signing.dumps([self.source_image.pk, self.source_url], salt=STAGED_SALT)

    def _staged(self) -> list[Any] | None:
        token = self.data.get("staged_image", "")
        if not token:
            return None
        try:
            staged = signing.loads(token, salt=STAGED_SALT, max_age=7 * 24 * 3600)
        except signing.BadSignature:
            return None
        return staged if isinstance(staged, list) and len(staged) == 2 else None

    def _staged_image(self) -> SourceImage | None:
        staged = self._staged()
        return SourceImage.objects.filter(pk=staged[0]).first() if staged else None

    def _staged_source_url(self) -> str:
        staged = self._staged()
        return str(staged[1])[:2000] if staged else ""

    def _take_image(self, upload: Any, url: str) -> None:
        try:
            result = images.intake_upload(upload) if upload else images.intake_url(url)
        except images.ImageRejected as exc:
            self.add_error("image" if upload else "image_url", exc.message)
            return
        self.source_image = store_image(
            result,
            original_name=getattr(upload, "name", "") or url.rsplit("/", 1)[-1][:255],
            user=self.user,
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        upload = cleaned.get("image")
        url = cleaned.get("image_url") or ""
        if upload and url:
            self.add_error("image_url", "Give either a file or a URL, not both: clear one of them.")
        elif upload or url:
            if "image_url" not in self.errors:
                self._take_image(upload, url)
        elif "image_url" not in self.errors:
            self.source_image = self._staged_image()
            if self.source_image is None:
                self.add_error("image", "Choose an image file or paste an image URL.")
        # Remember where a URL image came from: Runflow may get that URL instead of a copy.
        if url and not upload:
            self.source_url = url
        elif not upload and self.source_image is not None:
            self.source_url = self._staged_source_url()
        cleaned["source_url"] = self.source_url

        prompt = (cleaned.get("prompt") or "").strip()
        alias = (cleaned.get("text_prompt") or "").strip()
        if alias and prompt and alias != prompt:
            self.add_error("prompt", "prompt and its deprecated alias text_prompt differ.")
        cleaned["prompt"] = prompt or alias

        self._check_inside_image(cleaned)
        if (
            not cleaned["prompt"]
            and not cleaned.get("point_prompts")
            and not cleaned.get("box_prompts")
            and not {"point_prompts", "box_prompts"} & set(self.errors)
        ):
            # Runflow fills a missing prompt with "wheel": never send a run without one.
            self.add_error(
                "prompt", "Give a text prompt, or add points or boxes: a run needs at least one."
            )
        return cleaned

    def _check_inside_image(self, cleaned: dict[str, Any]) -> None:
        if self.source_image is None:
            return
        w, h = self.source_image.width, self.source_image.height
        for n, p in enumerate(cleaned.get("point_prompts") or [], start=1):
            if p["x"] >= w or p["y"] >= h:
                self.add_error(
                    "point_prompts",
                    f"Point {n} ({p['x']}, {p['y']}) is outside the image, "
                    f"which is {w}×{h} (x 0–{w - 1}, y 0–{h - 1}).",
                )
                break
        for n, b in enumerate(cleaned.get("box_prompts") or [], start=1):
            if b["x_max"] > w or b["y_max"] > h:
                self.add_error(
                    "box_prompts",
                    f"Box {n} reaches outside the image, which is {w}×{h} pixels.",
                )
                break

    def save(self, owner: Any, *, parent: Run | None = None) -> Run:
        """The run this valid form describes, stored (the caller queues its submit, in the
        same transaction). `parent` defaults to the run the form was filled in from."""
        return Run.objects.create(
            owner=owner,
            image=self.source_image,
            source_url=self.cleaned_data["source_url"],
            input=self.run_input(),
            metadata=self.cleaned_data["metadata"],
            parent=parent or self.cleaned_data["parent"],
        )

    def run_input(self) -> dict[str, Any]:
        """The model input as it will be sent, minus image_url (resolved when submitting)."""
        cd = self.cleaned_data
        data: dict[str, Any] = {
            # Always sent, even empty: a missing prompt means "wheel" to Runflow.
            "prompt": cd["prompt"],
            **{name: cd[name] for name in Run.OPTION_NAMES},
        }
        if cd.get("point_prompts"):
            data["point_prompts"] = cd["point_prompts"]
        if cd.get("box_prompts"):
            data["box_prompts"] = cd["box_prompts"]
        return data


THUMBNAIL_SIZE = (240, 180)


def thumbnail_jpeg(data: bytes) -> bytes:
    """A small JPEG of an image intake already accepted (so it decodes, within limits)."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", THUMBNAIL_SIZE)  # JPEG: decode at a fraction of the size, much faster
        im.thumbnail(THUMBNAIL_SIZE)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            flat = Image.new("RGB", im.size, (255, 255, 255))
            flat.paste(im, mask=im.getchannel("A"))
            im = flat
        elif im.mode != "RGB":
            im = im.convert("RGB")
        out = io.BytesIO()
        im.save(out, "JPEG", quality=80, optimize=True)
        return out.getvalue()


def store_image(result: images.IntakeResult, *, original_name: str, user: Any) -> SourceImage:
    """Keep one SourceImage per content; the same photo uploaded twice is stored once."""
    existing = SourceImage.objects.filter(sha256=result.sha256).first()
    if existing is not None:
        return existing
    image = SourceImage(
        sha256=result.sha256,
        content_type=result.content_type,
        width=result.width,
        height=result.height,
        byte_size=len(result.data),
        converted=result.converted,
        original_name=original_name[:255],
        uploaded_by=user if getattr(user, "is_authenticated", False) else None,
    )
    image.thumbnail.save(
        f"{result.sha256[:16]}.jpg", ContentFile(thumbnail_jpeg(result.data)), save=False
    )
    image.file.save(
        f"{result.sha256[:16]}.{result.extension}", ContentFile(result.data), save=False
    )
    try:
        with transaction.atomic():
            image.save()
    except IntegrityError:
        # Someone stored the same content a moment ago: use theirs, drop our file.
        image.file.delete(save=False)
        image.thumbnail.delete(save=False)
        return SourceImage.objects.get(sha256=result.sha256)
    return image
