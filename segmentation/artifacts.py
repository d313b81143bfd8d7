"""Turning SAM 3's output into files we keep: masks, an overlay and a thumbnail.

Runflow's output URLs are presigned and expire, so every mask (and the preview) is copied into our
own storage as soon as a run succeeds. This module holds the pure parts of that job and the
downloads; the Django side (the background task, ``Mask`` rows, storage) lives elsewhere.

* ``parse_output`` finds the masks, scores, boxes and preview in a run's ``output`` whatever shape
  it has (the nesting is a guess, see docs: ``/work/shared/runflow-api.md``) and never raises.
* ``download`` fetches one artifact: a ``data:`` URI (``sync_mode``) is decoded locally, an http(s)
  URL is fetched through the same SSRF guard as image URLs people paste (``segmentation.images``),
  except that Runflow's own origin (``RUNFLOW_BASE_URL``) is trusted. Errors are ``ArtifactError``
  with a sentence for people and a ``permanent`` flag that tells the caller whether to retry later.
* ``normalize_mask`` turns whatever Runflow sent for a mask into our copy: a 1-bit PNG at exactly
  the size of the image the person sees, plus its area and bounding box.
* ``render_overlay`` and ``render_thumbnail`` draw the masks in ``PALETTE`` colours.

Settings are read at call time: ``SAM3WEB_ARTIFACT_TIMEOUT`` (30 s), ``SAM3WEB_ARTIFACT_MAX_BYTES``
(50 MiB), ``SAM3WEB_ARTIFACT_BACKOFF`` (0.5 s), plus the image ones this module shares with
``segmentation.images``: ``SAM3WEB_MAX_IMAGE_PIXELS``, ``SAM3WEB_FETCH_MAX_REDIRECTS`` and
``SAM3WEB_FETCH_ALLOW_PRIVATE``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import math
import reprlib
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
from django.conf import settings
from PIL import Image

# The SSRF guard, the format sniffing and the grey-level conversion are the image intake's own:
# artifacts must be exactly as safe as images people paste, so the pieces are shared, not copied.
from .images import (
    _EXIF_TRANSPOSE,
    _HIGH_BIT_MODES,
    _OPEN_ORDER,
    GuardedNetworkBackend,
    GuardedTransport,
    ImageRejected,
    _address_policy,
    _caused_by,
    _open_header,
    _orientation,
    _to_8bit_gray,
    _unreadable,
)

logger = logging.getLogger(__name__)

# matplotlib's tab10, in order: what people know from notebooks, and distinct at 50% alpha.
PALETTE: list[tuple[int, int, int]] = [
    (31, 119, 180),  # blue
    (255, 127, 14),  # orange
    (44, 160, 44),  # green
    (214, 39, 40),  # red
    (148, 103, 189),  # purple
    (140, 86, 75),  # brown
    (227, 119, 194),  # pink
    (127, 127, 127),  # grey
    (188, 189, 34),  # olive
    (23, 190, 207),  # cyan
]


def colour_for(index: int) -> tuple[int, int, int]:
    """The overlay colour of instance ``index``."""
    return PALETTE[index % len(PALETTE)]


MiB = 1024 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BYTES = 50 * MiB
MAX_ATTEMPTS = 3
# Seconds before the second attempt; doubled before each later one. None: read
# settings.SAM3WEB_ARTIFACT_BACKOFF (default 0.5). Tests may set either.
BACKOFF: float | None = None
# Presigned URLs carry long signatures (an STS session token alone can be 1,000+ characters), so
# the 2,000-character limit for pasted links would be too tight here.
MAX_URL_LENGTH = 16_384
THUMBNAIL_SIZE = (240, 180)
THUMBNAIL_QUALITY = 80
USER_AGENT = "sam3web/0.1 (+artifact download)"
_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "GIF", "AVIF"})
_LOSSLESS = frozenset({"PNG", "GIF"})
_NEAREST = Image.Resampling.NEAREST


class ArtifactError(Exception):
    """One artifact could not be had. ``message`` is a sentence for a person; ``permanent`` is
    False when trying again later may work (5xx, timeouts, network trouble) and True when it will
    not (404/410, not an image, too big, a blocked address). ``code`` is a short stable reason for
    code and tests ('http_status', 'timeout', 'network', 'too_large', 'not_image', 'web_page',
    'damaged', 'too_many_pixels', 'blocked_address', 'bad_url', 'redirects', 'empty',
    'bad_data_uri', 'bad_size')."""

    def __init__(self, message: str, permanent: bool, *, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code

    def __str__(self) -> str:
        return self.message


def _cap(what: str) -> str:
    return what[:1].upper() + what[1:]


def _size_text(n: int) -> str:
    if n >= 100 * 1024:
        return f"{n / MiB:.1f}".removesuffix(".0") + " MiB"
    return f"{n:,} bytes"


# --- parse_output -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskRef:
    index: int  # the mask's position among the masks (0-based); also its colour: PALETTE[i % 10]
    url: str | None  # http(s) URL or data: URI (sync_mode); None if missing or unusable
    score: float | None
    box_norm: tuple[float, float, float, float] | None  # [cx, cy, w, h] as given, normalized 0-1


@dataclass(frozen=True)
class ParsedOutput:
    masks: list[MaskRef]
    preview_url: str | None  # model_data.image (or top-level image) url
    found_in: str  # "model_data" | "top_level" | "outputs" | "none"
    notes: list[str]  # what was not understood (the caller logs these)


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


def _is_list(value: object) -> bool:
    return isinstance(value, list | tuple)


def parse_output(output: object) -> ParsedOutput:
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
        return ParsedOutput(masks=[], preview_url=None, found_in="none", notes=list(notes))


def _parse_output(output: object, notes: _Notes) -> ParsedOutput:
    if isinstance(output, str | bytes) and output.strip()[:1] in ("{", b"{"):
        try:
            output = json.loads(output)
            notes.add("the output was a JSON string; read it as JSON")
        except (ValueError, RecursionError):
            pass
    if not isinstance(output, Mapping):
        what = "empty" if output is None else f"a {type(output).__name__}, not an object"
        notes.add(f"the output is {what}; no masks found")
        return ParsedOutput(masks=[], preview_url=None, found_in="none", notes=list(notes))

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
        return ParsedOutput(masks=masks, preview_url=preview_url, found_in=name, notes=list(notes))

    if outputs is None:
        notes.add("no masks found: neither model_data.masks, masks nor outputs[] is present")
        return ParsedOutput(masks=[], preview_url=preview_url, found_in="none", notes=list(notes))

    expected = _expected_count([c for _n, c in containers], notes)
    entries, preview = _split_outputs(outputs, expected, notes)
    items = [(_file_url(entry, f"outputs[{pos}]", notes), entry) for pos, entry in entries]
    masks = _mask_refs(items, [c for _n, c in containers], notes)
    if preview is not None and preview_url is None:
        preview_url = preview
    if not masks:
        notes.add("outputs[] holds no mask images")
    return ParsedOutput(masks=masks, preview_url=preview_url, found_in="outputs", notes=list(notes))


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


def _number(value: object) -> float | None:
    """A finite int/float as float; None for bools, text, NaN, infinities and everything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too big for a float
        return None
    return number if math.isfinite(number) else None


def _score(value: object, where: str, notes: _Notes) -> float | None:
    if value is None:
        return None
    number = _number(value)
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
    numbers = [_number(v) for v in value]
    if any(n is None for n in numbers):
        notes.add(f"{where} is {_show(value)}, not 4 finite numbers; ignored it")
        return None
    cx, cy, w, h = numbers  # type: ignore[misc]
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
    own = [m.get("index") for _pos, m in entries]
    if own and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in own):
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
    data_uri = isinstance(url, str) and url.strip()[:5].lower() == "data:"
    if data_uri and url.strip()[5:11].lower() != "image/":
        notes.add(f"outputs[{pos}] is a data: URI that is not an image; ignored it")
        return False
    return True


def _entry_size(entry: Mapping) -> tuple[float, float] | None:
    w, h = _number(entry.get("width")), _number(entry.get("height"))
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


# --- download -----------------------------------------------------------------------------------


def _timeout() -> float:
    return float(getattr(settings, "SAM3WEB_ARTIFACT_TIMEOUT", DEFAULT_TIMEOUT))


def _max_bytes() -> int:
    return int(getattr(settings, "SAM3WEB_ARTIFACT_MAX_BYTES", DEFAULT_MAX_BYTES))


def _backoff() -> float:
    if BACKOFF is not None:
        return BACKOFF
    return float(getattr(settings, "SAM3WEB_ARTIFACT_BACKOFF", 0.5))


def download(url: str, *, what: str) -> bytes:
    """The bytes of one artifact, which are certain to start like an image (PNG, JPEG, WebP, GIF
    or AVIF; normalize_mask decodes them fully). Raises ArtifactError, and nothing else.

    A response that is not an image (an HTML error page served with 200, a login page, an XML
    error document) is refused here, as permanent, rather than handed to the caller to store.
    """
    if not isinstance(url, str) or not url.strip():
        raise ArtifactError(f"Runflow gave no link for {what}.", permanent=True, code="bad_url")
    url = url.strip()
    max_bytes = _max_bytes()
    if url[:5].lower() == "data:":
        return _check_image_bytes(_decode_data_uri(url, what, max_bytes), what, url=False)
    return _check_image_bytes(_fetch(url, what, max_bytes), what, url=True)


def _image_format(data: bytes) -> str | None:
    """Which of our formats the first bytes claim to be, by Pillow's own signature checks."""
    prefix = data[:16]
    for name in _OPEN_ORDER:
        _factory, accept = Image.OPEN[name]
        if accept is not None and accept(prefix) is True:
            return name
    return None


def _check_image_bytes(data: bytes, what: str, *, url: bool) -> bytes:
    source = f"Runflow's link for {what}" if url else f"The inline data for {what}"
    if not data:
        raise ArtifactError(f"{source} gave an empty file.", permanent=True, code="empty")
    if _image_format(data) is not None:
        return data
    refusal = _unreadable(data, claimed=False)
    if refusal.code == "web_page":
        raise ArtifactError(
            f"{source} gave a web page, not an image.", permanent=True, code="web_page"
        )
    raise ArtifactError(
        f"{source} gave a file that is not an image.", permanent=True, code="not_image"
    )


def _decode_data_uri(url: str, what: str, max_bytes: int) -> bytes:
    """data:[<mediatype>][;base64],<data> (RFC 2397), decoded without touching the network."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise ArtifactError(
            f"The inline data for {what} is not a valid data: URI.",
            permanent=True,
            code="bad_data_uri",
        )
    params = [p.strip().lower() for p in header.split(";")]
    media_type = params[0] or "text/plain"  # RFC 2397's default
    if not media_type.startswith("image/"):
        raise ArtifactError(
            f"The inline data for {what} is {media_type}, not an image.",
            permanent=True,
            code="not_image",
        )
    too_big = ArtifactError(
        f"The inline data for {what} is larger than the {_size_text(max_bytes)} limit.",
        permanent=True,
        code="too_large",
    )
    if "base64" in params[1:]:
        # Whitespace (line-wrapped base64) and percent-escapes are legal in a URI; padding is
        # often dropped; URL-safe alphabets turn up too. Anything else is not base64.
        text = "".join(payload.split())
        if len(text) // 4 * 3 > max_bytes + 3:  # refuse before decoding anything
            raise too_big
        if "%" in text:
            text = unquote_to_bytes(text).decode("ascii", "replace")
        text = text.replace("-", "+").replace("_", "/")
        text += "=" * (-len(text) % 4)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ArtifactError(
                f"The inline data for {what} is not valid base64.",
                permanent=True,
                code="bad_data_uri",
            ) from None
    else:
        if len(payload) > 3 * max_bytes:  # each byte is at most 3 characters (%xx)
            raise too_big
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise too_big
    return data


class _TryAgain(Exception):
    """An attempt failed in a way another attempt may fix; carries the error to give up with."""

    def __init__(self, error: ArtifactError) -> None:
        super().__init__(error.message)
        self.error = error


_Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


def _origin(url: httpx.URL) -> _Origin:
    return (url.scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(url.scheme, 0))


def _trusted_origin() -> _Origin | None:
    """Runflow's own origin, from RUNFLOW_BASE_URL: its storage links (and the stand-in on
    127.0.0.1 in tests and by hand) are fetched without the private-address check."""
    base = getattr(settings, "RUNFLOW_BASE_URL", "") or ""
    try:
        url = httpx.URL(base)
    except (httpx.InvalidURL, ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return _origin(url)


def _check_url(raw: str, what: str) -> httpx.URL:
    bad = ArtifactError(
        f"Runflow's link for {what} is not a valid web address.", permanent=True, code="bad_url"
    )
    if len(raw) > MAX_URL_LENGTH:
        raise bad
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise bad from None
    if url.scheme not in ("http", "https") or not url.host:
        raise bad
    return url


def _fetch(raw_url: str, what: str, max_bytes: int) -> bytes:
    """GET with retries under one overall deadline: a hanging server costs at most the timeout,
    however many attempts and redirects it takes."""
    timeout = _timeout()
    deadline = time.monotonic() + timeout
    start = _check_url(raw_url, what)
    backoff = _backoff()
    last: ArtifactError | None = None
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            if time.monotonic() + delay >= deadline:
                break  # no time left for another try
            time.sleep(delay)
        try:
            return _attempt(start, what, deadline, timeout, max_bytes)
        except _TryAgain as exc:
            last = exc.error
            logger.info("download of %s failed (attempt %d): %s", what, attempt + 1, last)
    assert last is not None
    raise last


def _attempt(start: httpx.URL, what: str, deadline: float, timeout: float, max_bytes: int) -> bytes:
    """One try: follow redirects (each hop re-checked) and read the body."""
    trusted = _trusted_origin()
    policy = _address_policy()
    max_redirects = int(getattr(settings, "SAM3WEB_FETCH_MAX_REDIRECTS", 5))
    # Each socket wait gets a third of the budget, so a server that goes silent still leaves
    # time for another attempt; the deadline caps the whole download in any case.
    per_wait = httpx.Timeout(timeout / MAX_ATTEMPTS).as_dict()
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "image/png,image/webp,image/jpeg,image/gif;q=0.9,*/*;q=0.1",
        # Images are compressed already; asking for identity keeps compression bombs out.
        "Accept-Encoding": "identity",
    }
    current = start
    seen = {str(current)}
    for _hop in range(max_redirects + 1):
        # Trust is per hop: a redirect from Runflow to anywhere else is checked like any URL.
        allowed: Callable[[Any], bool] = (
            (lambda _addr: True) if _origin(current) == trusted else policy
        )
        backend = GuardedNetworkBackend(allowed=allowed, deadline=deadline, timeout_seconds=timeout)
        with GuardedTransport(backend) as transport, _network_errors(what, current.host, timeout):
            request = httpx.Request(
                "GET", current, headers=headers, extensions={"timeout": per_wait}
            )
            response = transport.handle_request(request)
            response.request = request
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECT_CODES and location:
                    current = _redirect_target(current, location, what)
                    if str(current) in seen:
                        raise ArtifactError(
                            f"Runflow's link for {what} redirects in a loop.",
                            permanent=True,
                            code="redirects",
                        )
                    seen.add(str(current))
                    continue
                _check_status(response, what)
                return _read_body(response, what, deadline, timeout, max_bytes)
            finally:
                response.close()
    raise ArtifactError(
        f"Runflow's link for {what} redirected more than {max_redirects} times.",
        permanent=True,
        code="redirects",
    )


def _redirect_target(current: httpx.URL, location: str, what: str) -> httpx.URL:
    try:
        target = str(current.join(location))
    except (httpx.InvalidURL, ValueError):
        target = location
    return _check_url(target, what)


def _check_status(response: httpx.Response, what: str) -> None:
    code = response.status_code
    if 200 <= code < 300:
        return
    if code >= 500:
        raise _TryAgain(
            ArtifactError(
                f"Runflow's storage failed to send {what} (HTTP {code}).",
                permanent=False,
                code="http_status",
            )
        )
    if code in (404, 410):
        message = f"Runflow's link for {what} has expired (HTTP {code})."
    elif code in (401, 403):
        # What S3-style storage answers for an expired presigned URL.
        message = f"Runflow's link for {what} was refused (HTTP {code}); it has probably expired."
    else:
        message = f"Runflow's link for {what} did not work (HTTP {code})."
    # Time-outs and rate limits are not retried on the spot (no 4xx is), but may pass later.
    raise ArtifactError(message, permanent=code not in (408, 425, 429), code="http_status")


def _read_body(
    response: httpx.Response, what: str, deadline: float, timeout: float, max_bytes: int
) -> bytes:
    too_big = ArtifactError(
        f"Runflow's file for {what} is larger than the {_size_text(max_bytes)} limit.",
        permanent=True,
        code="too_large",
    )
    declared = response.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > max_bytes:
        raise too_big  # no need to download it to know
    parts: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > max_bytes:  # Content-Length is a claim; the bytes are what count
            raise too_big
        if time.monotonic() > deadline:  # a trickle never trips a read timeout
            raise _TryAgain(_timeout_error(what, timeout))
        parts.append(chunk)
    return b"".join(parts)


def _timeout_error(what: str, seconds: float) -> ArtifactError:
    unit = "second" if seconds == 1 else "seconds"
    return ArtifactError(
        f"Downloading {what} from Runflow took longer than {seconds:g} {unit}, so we stopped.",
        permanent=False,
        code="timeout",
    )


@contextlib.contextmanager
def _network_errors(what: str, host: str, timeout: float) -> Iterator[None]:
    """The guard's and httpx's exceptions as ArtifactError (permanent) or _TryAgain."""
    try:
        yield
    except ImageRejected as exc:  # raised by GuardedNetworkBackend
        if exc.code == "blocked_address":
            logger.warning("refused to download %s from %s: private address", what, host)
            raise ArtifactError(
                f"Runflow's link for {what} points to a private or local network address "
                f"({host}), so we did not download it.",
                permanent=True,
                code="blocked_address",
            ) from None
        if exc.code == "timeout":
            raise _TryAgain(_timeout_error(what, timeout)) from None
        if exc.code == "unreachable":
            raise _TryAgain(
                ArtifactError(
                    f"Could not find the server {host} to download {what}.",
                    permanent=False,
                    code="network",
                )
            ) from None
        raise ArtifactError(exc.message, permanent=True, code=exc.code) from None
    except httpx.TimeoutException:
        raise _TryAgain(_timeout_error(what, timeout)) from None
    except (httpx.HTTPError, OSError) as exc:
        reason = "its certificate could not be verified" if _caused_by(exc, ssl.SSLError) else None
        logger.info("download of %s from %s failed: %r", what, host, exc)
        raise _TryAgain(
            ArtifactError(
                f"Could not download {what} from {host}"
                + (f" ({reason})." if reason else ": the connection failed."),
                permanent=False,
                code="network",
            )
        ) from None


# --- masks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mask:
    png: bytes  # our copy: a 1-bit PNG ("1" mode) at exactly (width, height): 255/white = object
    area: int  # object pixels
    bbox: tuple[int, int, int, int] | None  # [x_min, y_min, x_max, y_max) of the object pixels


def _max_pixels() -> int:
    limit = int(getattr(settings, "SAM3WEB_MAX_IMAGE_PIXELS", 50_000_000))
    # The same ceiling as images.intake_bytes: Pillow's own limit cannot be raised from here.
    if Image.MAX_IMAGE_PIXELS is not None:
        limit = min(limit, int(Image.MAX_IMAGE_PIXELS))
    return limit


def _too_many_pixels(
    what: str, size: tuple[int, int] | None, limit: int, source: str = " from Runflow"
) -> ArtifactError:
    shown = f"{size[0]:,}×{size[1]:,} pixels" if size else "too many pixels"
    return ArtifactError(
        f"{_cap(what)}{source} is {shown}, more than the {limit / 1e6:g}-megapixel limit.",
        permanent=True,
        code="too_many_pixels",
    )


def _check_size(width: object, height: object, what: str) -> tuple[int, int]:
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height))
    if not ok:
        raise ArtifactError(
            f"Cannot make {what} at {width!r}×{height!r} pixels.", permanent=True, code="bad_size"
        )
    limit = _max_pixels()
    if width * height > limit:  # type: ignore[operator]
        raise ArtifactError(
            f"Cannot make {what} at {width:,}×{height:,} pixels: "
            f"that is more than the {limit / 1e6:g}-megapixel limit.",
            permanent=True,
            code="too_many_pixels",
        )
    return width, height  # type: ignore[return-value]


def _open(data: bytes, what: str, source: str = " from Runflow") -> Image.Image:
    """Open and fully decode untrusted image bytes with only our parsers, refusing bombs from the
    header (before a single pixel is decoded). Raises ArtifactError (permanent); its message
    reads f"{what}{source} is ...", e.g. "Mask 3 from Runflow is not an image." """
    data = bytes(data)
    if not data:
        raise ArtifactError(f"{_cap(what)}{source} is empty.", permanent=True, code="empty")
    limit = _max_pixels()
    try:
        im = _open_header(data)  # header only; no Pillow-wide bomb check at open time
    except ImageRejected as exc:
        if exc.code == "web_page":
            message, code = f"{_cap(what)}{source} is a web page, not an image.", "web_page"
        elif exc.code == "corrupt":
            message, code = f"{_cap(what)}{source} is damaged or incomplete.", "damaged"
        else:
            message, code = f"{_cap(what)}{source} is not an image.", "not_image"
        raise ArtifactError(message, permanent=True, code=code) from None
    except Image.DecompressionBombError:
        raise _too_many_pixels(what, None, limit, source) from None
    try:
        if im.format not in _FORMATS:  # pragma: no cover - _open_header only knows these
            raise ArtifactError(f"{_cap(what)}{source} is not an image.", permanent=True)
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ArtifactError(
                f"{_cap(what)}{source} has no pixels.", permanent=True, code="damaged"
            )
        if width * height > limit:
            raise _too_many_pixels(what, (width, height), limit, source)
        try:
            im.load()
        except Image.DecompressionBombError:  # e.g. a GIF frame larger than its screen
            raise _too_many_pixels(what, (width, height), limit, source) from None
        except Exception as exc:  # Pillow's many ways of saying "can't read this"
            logger.info("%s failed to decode: %s: %s", what, type(exc).__name__, exc)
            raise ArtifactError(
                f"{_cap(what)}{source} is damaged or incomplete.",
                permanent=True,
                code="damaged",
            ) from None
    except BaseException:
        im.close()
        raise
    return im


def _binarize(im: Image.Image) -> Image.Image:
    """A mode "1" image, 255 = object: alpha > 127 where the image has an alpha channel that is
    not uniformly opaque, else grey value > 127. Always a new image (im may be closed after)."""
    mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        alpha = im.getchannel("A") if mode in ("RGBA", "LA") else im.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha.convert("1", dither=Image.Dither.NONE)  # threshold: > 127
        if "transparency" in im.info and mode in ("P", "L", "RGB"):
            im = im.convert("RGBA")  # so the grey value below is read without the tRNS key
    if mode == "1" and im.mode == "1":
        return im.copy()
    gray = _to_8bit_gray(im) if im.mode in _HIGH_BIT_MODES else im.convert("L")
    if im.format in _LOSSLESS and gray.getextrema() == (0, 1):
        # A lossless 0/1 label image (numpy's bool saved as-is): 1 is the object. Never applied
        # to JPEG/WebP, whose compression noise on an empty mask is exactly 0s and 1s.
        return gray.point([0] + [255] * 255).convert("1", dither=Image.Dither.NONE)
    return gray.convert("1", dither=Image.Dither.NONE)


def _encode_png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def normalize_mask(data: bytes, width: int, height: int, *, what: str) -> Mask:
    """Our copy of a mask: a 1-bit PNG at exactly (width, height), its area and bounding box.

    Runflow may send the mask at another size than the image (half size, another aspect): it is
    stretched to the image's size with nearest-neighbour, so a mask pixel stays a mask pixel and
    no grey edge appears. EXIF orientation is not applied: masks are computed on the upright
    image we sent, and mask files carry no orientation. Raises ArtifactError (permanent).
    """
    width, height = _check_size(width, height, what)
    im = _open(data, what)
    with im:
        mask = _binarize(im)
    if mask.size != (width, height):
        if abs(mask.width / mask.height - width / height) > 0.02 * (width / height):
            logger.debug(
                "%s is %dx%d for a %dx%d image (another aspect ratio); stretched it",
                what,
                mask.width,
                mask.height,
                width,
                height,
            )
        mask = mask.resize((width, height), _NEAREST)
    area = mask.histogram()[255]  # mode "1" histograms have 256 bins: 0 and 255 are used
    bbox = mask.getbbox()
    return Mask(png=_encode_png(mask), area=area, bbox=tuple(bbox) if bbox else None)


def box_to_pixels(
    box_norm: tuple[float, float, float, float] | list[float], width: int, height: int
) -> tuple[int, int, int, int]:
    """[cx, cy, w, h] normalized to 0-1 -> pixel [x_min, y_min, x_max, y_max] of the image the
    person sees (after EXIF orientation: use the image's displayed width and height), clamped to
    the image. Raises ValueError for anything but 4 finite numbers."""
    if not _is_list(box_norm) or len(box_norm) != 4:
        raise ValueError(f"a box is 4 numbers [cx, cy, w, h], not {_show(box_norm)}")
    numbers = [_number(v) for v in box_norm]
    if any(n is None for n in numbers):
        raise ValueError(f"a box is 4 finite numbers, not {_show(box_norm)}")
    cx, cy, w, h = numbers  # type: ignore[misc]

    def clamp(value: float, limit: int) -> int:
        return min(limit, max(0, round(value)))

    x_min = clamp((cx - w / 2) * width, width)
    y_min = clamp((cy - h / 2) * height, height)
    x_max = clamp((cx + w / 2) * width, width)
    y_max = clamp((cy + h / 2) * height, height)
    return (x_min, y_min, max(x_min, x_max), max(y_min, y_max))


# --- overlay and thumbnail ----------------------------------------------------------------------


def _check_colour(colour: object) -> tuple[int, int, int]:
    if (
        _is_list(colour)
        and len(colour) == 3  # type: ignore[arg-type]
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)  # type: ignore[union-attr]
    ):
        return tuple(colour)  # type: ignore[arg-type,return-value]
    raise ValueError(f"a colour is 3 integers 0-255, not {_show(colour)}")


def render_overlay(
    mask_pngs: Iterable[tuple[bytes, tuple[int, int, int]]],
    width: int,
    height: int,
    *,
    alpha: int = 128,
) -> bytes:
    """An RGBA PNG at (width, height): transparent except the masks, each in its colour at
    ``alpha``. Masks are decoded one at a time as the iterable yields them (stream them from
    storage), so memory holds the canvas and one mask. Where masks overlap, the later one's
    colour replaces the earlier one's, so the overlay's alpha stays ``alpha`` everywhere and
    overlapping masks do not darken the photo more than single ones. A mask at another size is
    stretched (nearest) to the canvas."""
    width, height = _check_size(width, height, "the overlay")
    if not (isinstance(alpha, int) and 0 <= alpha <= 255):
        raise ValueError(f"alpha is 0-255, not {alpha!r}")
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    for number, (png, colour) in enumerate(mask_pngs):
        fill = (*_check_colour(colour), alpha)
        im = _open(png, f"mask {number}", source="")
        with im:
            # Our own masks are plain "1" PNGs and are used as they are, without a copy.
            plain = im.mode == "1" and "transparency" not in im.info
            mask = im if plain else _binarize(im)
            if mask.size != (width, height):
                mask = mask.resize((width, height), _NEAREST)
            canvas.paste(fill, None, mask)  # a "1" mask: replace exactly the object pixels
            del mask
    return _encode_png(canvas)


def render_thumbnail(
    image_bytes: bytes, overlay_png: bytes | None, *, size: tuple[int, int] = THUMBNAIL_SIZE
) -> bytes:
    """A JPEG (quality 80) that fits within ``size``, keeping the image's aspect ratio, of the
    image as the person sees it (EXIF orientation applied) with the overlay on top. Both are
    scaled down before they meet; a JPEG is decoded at a reduced scale (Image.draft), so a 12 MP
    photo costs a fraction of a full decode. Raises ArtifactError (permanent) for bytes that are
    not an image."""
    tw, th = size
    if not (isinstance(tw, int) and isinstance(th, int) and tw > 0 and th > 0):
        raise ValueError(f"a thumbnail size is two positive integers, not {size!r}")
    data = bytes(image_bytes)
    base = _thumbnail_base(data, (tw, th))
    if overlay_png is not None:
        overlay = _open(overlay_png, "the overlay", source="")
        with overlay:
            layer = overlay if overlay.mode == "RGBA" else overlay.convert("RGBA")
            # resize premultiplies alpha, so transparent pixels do not bleed black into edges.
            layer = layer.resize(base.size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        base = Image.alpha_composite(base, layer)
    flat = Image.new("RGB", base.size, (255, 255, 255))  # transparent photos on white
    flat.paste(base, None, base.getchannel("A"))
    buf = io.BytesIO()
    flat.save(buf, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return buf.getvalue()


def _thumbnail_base(data: bytes, size: tuple[int, int]) -> Image.Image:
    """The image, upright, scaled to fit ``size``, as RGBA."""
    # Open the header ourselves so draft() can act before any pixel is decoded.
    limit = _max_pixels()
    try:
        im = _open_header(data)
    except ImageRejected:
        raise ArtifactError(
            "The image could not be read to make a thumbnail.", permanent=True, code="not_image"
        ) from None
    except Image.DecompressionBombError:
        raise _too_many_pixels("the image", None, limit, "") from None
    with im:
        if im.width * im.height > limit:
            raise _too_many_pixels("the image", im.size, limit, "")
        orientation = _orientation(im)
        # The box in the stored pixels' orientation: a 90° turn swaps width and height.
        box = (size[1], size[0]) if orientation in (5, 6, 7, 8) else size
        if im.format in ("JPEG", "MPO"):
            im.draft("RGB", box)  # decode at 1/2, 1/4 or 1/8 scale, still at least box
        try:
            im.load()
            small = im if im.mode in ("RGB", "RGBA") else _displayable(im)
            small.thumbnail(box, Image.Resampling.LANCZOS, reducing_gap=2.0)
            if small is im:
                small = im.copy()
        except Image.DecompressionBombError:
            raise _too_many_pixels("the image", im.size, limit, "") from None
        except Exception as exc:
            logger.info("thumbnail source failed to decode: %s: %s", type(exc).__name__, exc)
            raise ArtifactError(
                "The image could not be read to make a thumbnail.", permanent=True, code="damaged"
            ) from None
    if orientation != 1:
        small = small.transpose(_EXIF_TRANSPOSE[orientation])
    return small if small.mode == "RGBA" else small.convert("RGBA")


def _displayable(im: Image.Image) -> Image.Image:
    if im.mode in _HIGH_BIT_MODES:
        return _to_8bit_gray(im)
    if im.mode in ("1", "L", "RGB"):
        return im.convert("RGB")
    return im.convert("RGBA")  # P, LA, CMYK, ... (keeps transparency where there is some)
