"""The new-batch form. It checks what can be checked at once (the concepts, the options, how
many images, that the ZIP is a ZIP) and nothing that takes long: every image is taken in later,
in the background (``batches.intake_batch``), so a bad one is refused on its own, with its
reason, and never sinks the batch."""

from __future__ import annotations

import zipfile
from typing import Any

from django import forms
from django.conf import settings

from segmentation import batches, schema
from segmentation.forms import URL_LINES_HELP, MultipleFileField, OptionsForm, url_lines
from segmentation.imaging.decode import ACCEPTED_FORMATS_TEXT, size_text

# More than this in the concepts box is refused before it is read: 20 concepts of 200
# characters, with room for blank lines, commas and repeats.
MAX_CONCEPTS_TEXT = batches.MAX_CONCEPTS * batches.MAX_CONCEPT_CHARS + 4000
MAX_URL_CHARS = 2000
NO_IMAGES = "Add images: files, a ZIP or URLs."
NOT_A_ZIP = "This file is not a ZIP archive."


def _max_images() -> int:
    return int(settings.SAM3WEB_BATCH_MAX_IMAGES)


class BatchForm(OptionsForm):
    field_order = ["images", "archive", "image_urls", "concepts"]

    images = MultipleFileField(
        required=False,
        label="Image files",
        widget=MultipleFileField.widget(attrs={"accept": "image/*"}),
    )
    archive = forms.FileField(
        required=False,
        label="or a ZIP of images",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}),
        help_text="Its folders are looked into; what is not an image is listed as refused.",
    )
    image_urls = forms.CharField(
        required=False,
        strip=False,
        label="or image URLs",
        widget=url_lines(),
        help_text=URL_LINES_HELP,
    )
    concepts = forms.CharField(
        required=False,
        strip=False,
        label="Concepts",
        widget=forms.Textarea(
            attrs={"rows": 4, "spellcheck": "true", "placeholder": "helmet\nsafety vest\nperson"}
        ),
        help_text=f"What to find: one per line (commas split too), 1 to {batches.MAX_CONCEPTS}. "
        "Each is a category of the dataset, and each image is run once per concept.",
    )
    run_again = forms.BooleanField(
        required=False,
        label="Run again anyway",
        help_text="Unless this is on, an image the team already ran with the same concept and "
        "options is not sent again: that earlier result is reused, and not paid for twice.",
    )
    name = forms.CharField(
        required=False,
        max_length=200,
        label="Name",
        widget=forms.TextInput(attrs={"placeholder": "e.g. Site photos, March"}),
        help_text="Optional: the list shows the images and concepts without one.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read when the page is made, so a changed setting is what the page says.
        limit = _max_images()
        self.fields["images"].help_text = (
            f"{ACCEPTED_FORMATS_TEXT}, up to {size_text(settings.SAM3WEB_MAX_IMAGE_BYTES)} "
            f"each; up to {limit:,} images in a batch."
        )
        self.fields["images"].widget.attrs["data-max-images"] = str(limit)
        self.options: dict[str, Any] = {}  # SAM 3's options, once the form is valid

    def open_sections(self) -> set[str]:
        return {"advanced"} if self.advanced_open() else set()

    def clean_archive(self) -> Any:
        archive = self.cleaned_data.get("archive")
        if not archive:
            return None
        try:
            is_zip = zipfile.is_zipfile(archive)
        except OSError:
            is_zip = False
        if not is_zip:
            raise forms.ValidationError(NOT_A_ZIP, code="not_zip")
        archive.seek(0)
        return archive

    def clean_image_urls(self) -> list[str]:
        urls = batches.parse_urls(self.cleaned_data.get("image_urls") or "")
        limit = _max_images()
        if len(urls) > limit:
            # Counted, not checked: each is fetched (and checked) in the background.
            raise forms.ValidationError(
                f"A batch takes at most {limit:,} images; these are {len(urls):,} URLs. "
                "Split them into several batches.",
                code="too_many",
            )
        for n, url in enumerate(urls, start=1):
            if len(url) > MAX_URL_CHARS:
                raise forms.ValidationError(
                    f"Line {n:,} is {len(url):,} characters long; a URL may be at most "
                    f"{MAX_URL_CHARS:,}.",
                    code="too_long",
                )
        return urls

    def clean_concepts(self) -> list[str]:
        text = self.cleaned_data.get("concepts") or ""
        if len(text) > MAX_CONCEPTS_TEXT:
            raise forms.ValidationError(
                f"This is {len(text):,} characters: a batch takes at most "
                f"{batches.MAX_CONCEPTS} concepts of at most {batches.MAX_CONCEPT_CHARS} "
                "characters each.",
                code="too_long",
            )
        try:
            return batches.parse_concepts(text)
        except batches.BatchError as exc:
            raise forms.ValidationError(str(exc), code="concepts") from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        files = cleaned.get("images") or []
        urls = cleaned.get("image_urls") or []
        archive = cleaned.get("archive")
        sources_broken = {"images", "archive", "image_urls"} & set(self.errors)
        if not sources_broken and not (files or urls or archive):
            self.add_error(None, NO_IMAGES)
        limit = _max_images()
        if len(files) + len(urls) > limit:
            self.add_error(
                None,
                f"A batch takes at most {limit:,} images; these are {len(files):,} files and "
                f"{len(urls):,} URLs. Split them into several batches.",
            )
        options = {name: cleaned.get(name) for name in schema.OPTION_NAMES}
        concepts = cleaned.get("concepts")
        if concepts and not set(schema.OPTION_NAMES) & set(self.errors):
            try:
                batches.run_input(concepts[0], options)
            except schema.SchemaError as exc:
                for name, messages in exc.by_field().items():
                    self.add_error(name if name in self.fields else None, messages[0])
            else:
                self.options = options
        return cleaned


def initial_from(batch: Any) -> dict[str, Any]:
    """The form filled in as an earlier batch was (its concepts and options; not its images)."""
    return {
        "concepts": "\n".join(batch.concepts),
        "run_again": batch.run_again,
        "name": batch.name,
        **{name: batch.options[name] for name in schema.OPTION_NAMES if name in batch.options},
    }
