"""Two to four runs side by side (``/runs/compare/?ids=…``).

The history page's checkboxes submit here as a plain GET form, so anything can arrive: no ids,
one, a dozen, garbage, ids of runs deleted since, the same run twice. ``CompareForm`` owns all
of that and the view answers 400 with the reasons, never a 500."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from segmentation.models import Mask, Run

MIN_RUNS = 2
MAX_RUNS = 4
# More values than this are refused before any is parsed: a hand-made URL with thousands of
# ids must not make us parse (or list back) thousands of strings.
MAX_VALUES = 50
SHOWN_CHARS = 40  # how much of a malformed id the error message repeats

OPTIONS = Run.OPTION_NAMES


def _shown(value: str) -> str:
    return value if len(value) <= SHOWN_CHARS else value[: SHOWN_CHARS - 1] + "…"


class RunIdsField(forms.Field):
    """Several run ids (the repeated ``ids`` parameter) → distinct UUIDs in the order given.

    The same run given twice (or spelled twice, upper case or without dashes) counts once."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> list[uuid.UUID]:
        if not value:
            return []
        if isinstance(value, str):
            value = [value]
        if len(value) > MAX_VALUES:
            raise forms.ValidationError(
                f"{len(value)} ids were given: choose {MIN_RUNS} to {MAX_RUNS} runs.",
                code="too_many",
            )
        ids: list[uuid.UUID] = []
        malformed: list[str] = []
        for raw in value:
            text = str(raw).strip()
            if not text:  # an empty box in a hand-made URL: nothing was chosen there
                continue
            try:
                parsed = uuid.UUID(text)
            except ValueError:
                malformed.append(text)
                continue
            if parsed not in ids:
                ids.append(parsed)
        if malformed:
            listed = ", ".join(f"“{_shown(m)}”" for m in malformed[:5])
            more = f" and {len(malformed) - 5} more" if len(malformed) > 5 else ""
            raise forms.ValidationError(
                f"Not a run id: {listed}{more}. Run ids look like "
                "3f2b1c9e-8d4a-4e1f-9c3b-2a1d0e9f8b7c.",
                code="malformed",
            )
        return ids

    def validate(self, value: list[uuid.UUID]) -> None:
        if len(value) < MIN_RUNS:
            chosen = "No run was" if not value else "Only one run was"
            raise forms.ValidationError(
                f"{chosen} chosen: choose {MIN_RUNS} to {MAX_RUNS} different runs to compare.",
                code="too_few",
            )
        if len(value) > MAX_RUNS:
            raise forms.ValidationError(
                f"{len(value)} runs were chosen: at most {MAX_RUNS} can be compared at once.",
                code="too_many",
            )


class CompareForm(forms.Form):
    ids = RunIdsField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runs: list[Run] = []  # the chosen runs, in order, once the form is valid

    def clean_ids(self) -> list[uuid.UUID]:
        ids: list[uuid.UUID] = self.cleaned_data["ids"]
        found = {
            run.pk: run
            for run in Run.objects.filter(pk__in=ids)
            .select_related("image", "owner")
            .prefetch_related("masks")
        }
        missing = [str(i) for i in ids if i not in found]
        if missing:
            said = (
                f"No run has the id {missing[0]}: it may have been deleted."
                if len(missing) == 1
                else f"No runs have the ids {', '.join(missing)}: they may have been deleted."
            )
            raise forms.ValidationError(said, code="unknown")
        # The order the person chose them in (a query returns them in its own).
        self.runs = [found[i] for i in ids]
        return ids


@dataclass
class InputRow:
    """One input field across the runs: what each run sent, and whether they differ."""

    name: str
    label: str
    kind: str  # how a value is shown: text, points, boxes, option, json, image
    values: list[Any]
    differs: bool


def _same(values: list[Any]) -> bool:
    # What was sent, key order aside ({"a": 1, "b": 2} equals {"b": 2, "a": 1}); lists keep
    # their order, so the same points listed in another order differ, as Runflow's input did.
    keys = {json.dumps(v, sort_keys=True, default=str) for v in values}
    return len(keys) == 1


def _row(
    name: str, label: str, kind: str, values: list[Any], key: list[Any] | None = None
) -> InputRow:
    differs = not _same(values if key is None else key)
    if kind == "json":  # shown as indented JSON text, "" for nothing (false and 0 are shown)
        values = ["" if v is None else json.dumps(v, indent=2, ensure_ascii=False) for v in values]
    return InputRow(name, label, kind, values, differs)


def input_rows(runs: list[Run]) -> list[InputRow]:
    """Every input of the runs, one row per field, as sent (``Run.input``) plus metadata."""
    inputs = [run.input if isinstance(run.input, dict) else {} for run in runs]
    rows = [
        # Images are stored once per content, so the same picture is the same row everywhere.
        _row("image", "Image", "image", [r.image for r in runs], [r.image_id for r in runs]),
        _row("prompt", "Text prompt", "text", [i.get("prompt") or "" for i in inputs]),
        _row("point_prompts", "Points", "points", [i.get("point_prompts") or [] for i in inputs]),
        _row("box_prompts", "Boxes", "boxes", [i.get("box_prompts") or [] for i in inputs]),
    ]
    rows += [_row(name, name, "option", [i.get(name) for i in inputs]) for name in OPTIONS]
    # Anything else a run's input carries (an older schema, a field added later) is shown too,
    # so no difference hides.
    known = {"prompt", "point_prompts", "box_prompts", *OPTIONS}
    extra = sorted({key for i in inputs for key in i} - known)
    rows += [_row(name, name, "json", [i.get(name) for i in inputs]) for name in extra]
    rows.append(_row("metadata", "Metadata", "json", [r.metadata or None for r in runs]))
    return rows


@dataclass
class Column:
    run: Run
    masks: list[Mask]
    missing: int  # masks that could not be copied


@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    form = CompareForm(request.GET)
    if not form.is_valid():
        return render(
            request,
            "segmentation/compare.html",
            {"form": form, "errors": form.errors.get("ids", [])},
            status=400,
        )
    runs = form.runs
    rows = input_rows(runs)
    columns = []
    for run in runs:
        masks = list(run.masks.all())
        columns.append(Column(run, masks, sum(1 for m in masks if not m.file)))
    return render(
        request,
        "segmentation/compare.html",
        {
            "form": form,
            "columns": columns,
            "rows": rows,
            # The image is said apart (different_images): these are the other inputs.
            "differing": [row for row in rows if row.differs and row.name != "image"],
            "different_images": rows[0].differs,
            "image_count": len({run.image_id for run in runs}),
        },
    )
