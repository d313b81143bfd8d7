"""Where the masks are in a Runflow SAM 3 output: ``parse_output`` finds the masks, scores,
boxes and preview whatever shape the output has (the exact nesting is a guess: see
docs/runflow-api.md) and never raises."""

from __future__ import annotations

import contextlib
import json
import logging
import reprlib
from collections.abc import Mapping
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from segmentation.engines.base import EngineOutput, MaskRef
from segmentation.imaging.masks import finite_number

logger = logging.getLogger(__name__)

_MAX_NOTES = 40
_repr = reprlib.Repr(maxlevel=2, maxstring=60, maxother=60, maxlist=4, maxdict=4)
# Words in an outputs[] entry's descriptive fields (or its file name) that mark the preview, i.e.
# the image with the masks drawn over it. Checked before "mask", since "image_with_mask" has both.
_PREVIEW_WORDS = (
    "preview",
    "overlay",
    "composite",
    "annotated",
    "visuali",
    "with_mask",
    "with-mask",
    "withmask",
    "masked",
    "applied",
    "blend",
)
_HINT_FIELDS = (
    "kind",
    "role",
    "name",
    "label",
    "key",
    "field",
    "type",
    "file_name",
    "filename",
    "title",
    "description",
)
# outputs[] "type" values that are certainly not images.
_NON_IMAGE_TYPES = ("video", "audio", "text", "json", "mesh", "3d", "document", "model")
_BOX_RANGE = (-1.0, 2.0)  # a little outside 0-1 is a box past the edge; 120.0 is pixels


class _Notes(list):
    """notes, deduplicated and capped so a garbage output cannot flood the log."""

    def add(self, text: str) -> None:
        if text in self:
            return
        if len(self) < _MAX_NOTES:
            self.append(text)
        elif len(self) == _MAX_NOTES:
            self.append("(more notes left out)")


def _show(value: object) -> str:
    try:
        return _repr.repr(value)
    except Exception:  # a repr that raises must not break parsing
        return f"<{type(value).__name__}>"


def _is_list(value: object) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    return isinstance(value, list | tuple)


def parse_output(output: object) -> EngineOutput:
    """Masks, scores, boxes and preview from a run's ``output``. Never raises.

    Where masks are looked for, in order:

    1. ``output["model_data"]["masks"]``, then 2. ``output["masks"]``: a ``masks`` key holding a
       list settles it, even an empty one (SAM 3 found nothing; outputs[] then holds at most the
       preview, which must not be taken for a mask). Items are ``{"url": ...}`` dicts or bare URL
       strings. Scores come from ``scores`` (numbers), else ``metadata[i].score``, else the
       item's own ``score``; boxes likewise from ``boxes``, ``metadata[i].box``, ``box``. These
       are read from the container that held the masks and, failing that, the other one.
       The preview is ``model_data.image``, else the top-level ``image`` (a dict with ``url`` or a
       string), else an outputs[] entry that calls itself a preview.
    3. ``output["outputs"]``, a list of ``{url, type, content_type, width, height, ...}``: the
       entries that are images (a ``content_type`` other than image/*, a ``type`` such as
       "video"/"text", or a non-image data: URI excludes an entry) are masks, in order, except the
       preview, which is:
       a. any entry whose kind/role/name/label/key/field/type/file_name (or the URL's file name)
          says preview/overlay/composite/annotated/"with mask"..., or whose key/field/name/role is
          exactly "image" (the name of model_data's preview field); the first one if several;
       b. failing that, only when the count is one more than expected (the length of
          scores/boxes/metadata, or else the number of entries whose fields say "mask"): the
          single entry that does not say "mask" when the others do, or else the last entry if its
          width×height differs from that of all the others (masks share one size; the preview is
          at the input's size);
       c. otherwise there is no preview, every image entry is a mask, and a note says so.
       ``MaskRef.index`` is the position among the masks (0, 1, ...), not in outputs[].
    """
    notes = _Notes()
    try:
        return _parse_output(output, notes)
    except Exception as exc:  # belt and braces: nothing here may sink the caller's task
        logger.warning("parse_output failed", exc_info=True)
        notes.add(f"could not read the output ({type(exc).__name__})")
        return EngineOutput(masks=[], preview_url=None, found_in="none", notes=list(notes))


def _parse_output(output: object, notes: _Notes) -> EngineOutput:
    if isinstance(output, str | bytes) and output.strip()[:1] in ("{", b"{"):
        try:
            output = json.loads(output)
            notes.add("the output was a JSON string; read it as JSON")
        except (ValueError, RecursionError):
            pass
    if not isinstance(output, Mapping):
        what = "empty" if output is None else f"a {type(output).__name__}, not an object"
        notes.add(f"the output is {what}; no masks found")
        return EngineOutput(masks=[], preview_url=None, found_in="none", notes=list(notes))

    containers: list[tuple[str, Mapping]] = []
    model_data = output.get("model_data")
    if isinstance(model_data, Mapping):
        containers.append(("model_data", model_data))
    elif model_data is not None:
        notes.add(f"model_data is {_show(model_data)}, not an object; ignored it")
    containers.append(("top_level", output))

    preview_url: str | None = None
    for name, container in containers:
        if "image" in container:
            preview_url = _file_url(container["image"], f"{name}.image", notes)
            if preview_url:
                break

    outputs = output.get("outputs")
    if outputs is not None and not _is_list(outputs):
        notes.add(f"outputs is {_show(outputs)}, not a list; ignored it")
        outputs = None

    for name, container in containers:
        raw = container.get("masks")
        if raw is None:
            continue
        if not _is_list(raw):
            notes.add(f"{name}.masks is {_show(raw)}, not a list; ignored it")
            continue
        items = [
            (
                _file_url(item, f"{name}.masks[{i}]", notes),
                item if isinstance(item, Mapping) else {},
            )
            for i, item in enumerate(raw)
        ]
        others = [c for _n, c in containers if c is not container]
        masks = _mask_refs(items, [container, *others], notes)
        if preview_url is None and outputs:
            preview_url = _outputs_preview_only(outputs, notes)
        return EngineOutput(masks=masks, preview_url=preview_url, found_in=name, notes=list(notes))

    if outputs is None:
        notes.add("no masks found: neither model_data.masks, masks nor outputs[] is present")
        return EngineOutput(masks=[], preview_url=preview_url, found_in="none", notes=list(notes))

    expected = _expected_count([c for _n, c in containers], notes)
    entries, preview = _split_outputs(outputs, expected, notes)
    items = [(_file_url(entry, f"outputs[{pos}]", notes), entry) for pos, entry in entries]
    masks = _mask_refs(items, [c for _n, c in containers], notes)
    if preview is not None and preview_url is None:
        preview_url = preview
    if not masks:
        notes.add("outputs[] holds no mask images")
    return EngineOutput(masks=masks, preview_url=preview_url, found_in="outputs", notes=list(notes))


def _file_url(item: object, where: str, notes: _Notes) -> str | None:
    """The URL of a file item: a {"url": ...} dict or a bare string; None (and a note) else."""
    raw = item.get("url") if isinstance(item, Mapping) else item
    if raw is None:
        notes.add(f"{where} has no url")
        return None
    if not isinstance(raw, str):
        notes.add(f"{where} has a url that is {_show(raw)}, not text")
        return None
    url = raw.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https", "data"):
        return url
    notes.add(f"{where} has a url that is neither http(s) nor data: ({_show(raw)})")
    return None


def _score(value: object, where: str, notes: _Notes) -> float | None:
    if value is None:
        return None
    number = finite_number(value)
    if number is None:
        notes.add(f"{where} is {_show(value)}, not a finite number; ignored it")
        return None
    if -1e-6 <= number <= 1 + 1e-6:  # float slop at the ends is clamped, not refused
        return min(1.0, max(0.0, number))
    notes.add(f"{where} is {number:g}, outside 0-1; ignored it")
    return None


def _box(value: object, where: str, notes: _Notes) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    if not _is_list(value) or len(value) != 4:
        notes.add(f"{where} is {_show(value)}, not a list of 4 numbers; ignored it")
        return None
    numbers = [n for n in map(finite_number, value) if n is not None]
    if len(numbers) != 4:
        notes.add(f"{where} is {_show(value)}, not 4 finite numbers; ignored it")
        return None
    cx, cy, w, h = numbers
    if w < 0 or h < 0:
        notes.add(f"{where} has a negative width or height; ignored it")
        return None
    lo, hi = _BOX_RANGE
    if not all(lo <= n <= hi for n in (cx, cy, w, h)):
        notes.add(f"{where} is {_show(value)}, which is not normalized to 0-1; ignored it")
        return None
    return (cx, cy, w, h)


def _metadata_by_index(metadata: list | tuple, notes: _Notes) -> dict[int, Mapping]:
    """metadata entries by mask index: their own ``index`` when those are usable (0-based, or
    exactly 1..n), else their position."""
    entries = [(pos, m) for pos, m in enumerate(metadata) if isinstance(m, Mapping)]
    if len(entries) != len(metadata):
        notes.add("metadata has entries that are not objects; ignored those")
    given = [m.get("index") for _pos, m in entries]
    own = [i for i in given if isinstance(i, int) and not isinstance(i, bool) and i >= 0]
    if own and len(own) == len(given):
        if len(set(own)) == len(own):
            shift = 1 if 0 not in own and set(own) == set(range(1, len(own) + 1)) else 0
            return {i - shift: m for i, (_pos, m) in zip(own, entries, strict=True)}
        notes.add("metadata has repeated index values; matched entries to masks by position")
    return dict(entries)


def _mask_refs(
    items: list[tuple[str | None, Mapping]], sources: list[Mapping], notes: _Notes
) -> list[MaskRef]:
    """MaskRefs for mask items (url, the item itself), with scores and boxes from the first
    container in ``sources`` that has each list."""
    count = len(items)

    def first_list(key: str) -> list | tuple | None:
        for source in sources:
            value = source.get(key)
            if value is None:
                continue
            if _is_list(value):
                if len(value) != count:
                    notes.add(f"{key} has {len(value)} entries for {count} masks")
                return value
            notes.add(f"{key} is {_show(value)}, not a list; ignored it")
        return None

    scores = first_list("scores")
    boxes = first_list("boxes")
    metadata_list = first_list("metadata")
    metadata = _metadata_by_index(metadata_list, notes) if metadata_list is not None else {}

    refs: list[MaskRef] = []
    for i, (url, item) in enumerate(items):
        meta = metadata.get(i, {})
        if scores is not None and i < len(scores):
            score = _score(scores[i], f"scores[{i}]", notes)
        elif meta.get("score") is not None:
            score = _score(meta.get("score"), f"metadata[{i}].score", notes)
        else:
            score = _score(item.get("score"), f"mask {i} score", notes)
        if boxes is not None and i < len(boxes):
            box = _box(boxes[i], f"boxes[{i}]", notes)
        elif meta.get("box") is not None:
            box = _box(meta.get("box"), f"metadata[{i}].box", notes)
        else:
            box = _box(item.get("box"), f"mask {i} box", notes)
        refs.append(MaskRef(index=i, url=url, score=score, box_norm=box))
    return refs


def _expected_count(containers: list[Mapping], notes: _Notes) -> int | None:
    """How many masks scores/boxes/metadata promise, if they agree."""
    lengths = {
        len(value)
        for container in containers
        for key in ("scores", "boxes", "metadata")
        if _is_list(value := container.get(key))
    }
    if len(lengths) > 1:
        notes.add(f"scores/boxes/metadata disagree on the number of masks ({sorted(lengths)})")
        return None
    return lengths.pop() if lengths else None


def _hint_text(entry: Mapping) -> str:
    parts = [str(entry[f]) for f in _HINT_FIELDS if isinstance(entry.get(f), str)]
    url = entry.get("url")
    if isinstance(url, str) and url[:4].lower() == "http":
        with contextlib.suppress(ValueError):
            parts.append(urlsplit(url).path.rsplit("/", 1)[-1])
    return " ".join(parts).lower()


def _says_preview(entry: Mapping) -> bool:
    if any(word in _hint_text(entry) for word in _PREVIEW_WORDS):
        return True
    return any(
        isinstance(entry.get(f), str) and entry[f].strip().lower() == "image"
        for f in ("key", "field", "name", "role")
    )


def _says_mask(entry: Mapping) -> bool:
    return "mask" in _hint_text(entry)


def _is_image_entry(entry: object, pos: int, notes: _Notes) -> bool:
    if not isinstance(entry, Mapping):
        notes.add(f"outputs[{pos}] is {_show(entry)}, not an object; ignored it")
        return False
    content_type = entry.get("content_type", entry.get("mime_type"))
    if (
        isinstance(content_type, str)
        and content_type.strip()
        and not content_type.strip().lower().startswith("image/")
    ):
        notes.add(f"outputs[{pos}] is {_show(content_type)}, not an image; ignored it")
        return False
    kind = entry.get("type")
    if isinstance(kind, str) and kind.strip().lower().startswith(_NON_IMAGE_TYPES):
        notes.add(f"outputs[{pos}] is of type {_show(kind)}, not an image; ignored it")
        return False
    url = entry.get("url")
    if (
        isinstance(url, str)
        and url.strip()[:5].lower() == "data:"
        and (url.strip()[5:11].lower() != "image/")
    ):
        notes.add(f"outputs[{pos}] is a data: URI that is not an image; ignored it")
        return False
    return True


def _entry_size(entry: Mapping) -> tuple[float, float] | None:
    w, h = finite_number(entry.get("width")), finite_number(entry.get("height"))
    return (w, h) if w is not None and h is not None else None


def _split_outputs(
    outputs: list | tuple, expected: int | None, notes: _Notes
) -> tuple[list[tuple[int, Mapping]], str | None]:
    """outputs[] -> (the mask entries with their positions, the preview's URL). See the rules in
    parse_output's docstring."""
    images = [(pos, e) for pos, e in enumerate(outputs) if _is_image_entry(e, pos, notes)]
    previews = [(pos, e) for pos, e in images if _says_preview(e)]
    rest = [(pos, e) for pos, e in images if not _says_preview(e)]
    preview: tuple[int, Mapping] | None = previews[0] if previews else None
    if len(previews) > 1:
        notes.add(f"{len(previews)} outputs[] entries look like previews; used the first")
    if preview is None and rest:
        mask_named = [(pos, e) for pos, e in rest if _says_mask(e)]
        if expected is None and mask_named:
            expected = len(mask_named)
        if expected is not None and len(rest) == expected + 1:
            unnamed = [(pos, e) for pos, e in rest if not _says_mask(e)]
            sizes = [_entry_size(e) for _pos, e in rest]
            others = set(sizes[:-1])
            if mask_named and len(unnamed) == 1:
                preview = unnamed[0]
            elif None not in sizes and len(others) == 1 and sizes[-1] not in others:
                preview = rest[-1]
            else:
                notes.add(
                    f"outputs[] has {len(rest)} images for {expected} masks, and nothing says "
                    "which is the preview; took them all as masks"
                )
        elif expected is not None and len(rest) != expected:
            notes.add(f"outputs[] has {len(rest)} mask images, but {expected} were expected")
    masks = [(pos, e) for pos, e in rest if preview is None or pos != preview[0]]
    preview_url = _file_url(preview[1], f"outputs[{preview[0]}]", notes) if preview else None
    return masks, preview_url


def _outputs_preview_only(outputs: list | tuple, notes: _Notes) -> str | None:
    """A preview from outputs[] when the masks came from elsewhere: only an entry that says so."""
    for pos, entry in enumerate(outputs):
        if isinstance(entry, Mapping) and _says_preview(entry):
            url = _file_url(entry, f"outputs[{pos}]", notes)
            if url:
                return url
    return None
