"""A batch's results as a dataset: COCO instance segmentation, YOLO segmentation, or a ZIP of
mask PNGs, streamed.

What goes in: every accepted image the review did not reject (in position order) is an image of
the dataset, even one with nothing found (a negative is data too). Its instances are the masks of
its cells' succeeded runs (a reused run counts like one the batch made) that have a stored file,
score at least ``min_score`` (no score: kept only when ``min_score`` is 0) and were not rejected
in this batch's review. The concepts are the categories, in the batch's order (COCO id =
position + 1, YOLO class = position). An image whose cell for some concept has no succeeded
run says so in COCO and instances.json ("unanswered"): its lack of that concept is unknown, not
a negative.

Memory stays flat whatever the batch size: the database is read in chunks, a few mask files
are read ahead (overlapping a bucket's round trips) and one is decoded at a time, JSON is
written entry by entry, and ZIPs go out as they are written (zipfile on an output that cannot
seek writes each entry's sizes after its data). Images and PNGs are stored, text is deflated.

* ``parse_options`` reads ``min_score`` and ``images`` from a query string, strictly.
* ``coco_json``, ``coco_zip``, ``yolo_zip`` and ``masks_zip`` yield the bytes of each format.
* ``images`` and ``instances`` are what they are built from.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import stat
import tempfile
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from django.db.models import Exists, F, OuterRef, QuerySet
from django.db.models.fields.files import FieldFile
from django.utils import timezone
from django.utils.text import slugify
from PIL import Image

from segmentation.exports import (
    _is_plain_mask,
    _mask_image,
    rle_area,
    rle_counts,
    rle_string,
)
from segmentation.imaging.store import read_file, storage_unavailable
from segmentation.models import Batch, BatchItem, BatchRun, Mask, Rejection, Run, SourceImage

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# fmt in the URL -> content type of the download.
FORMATS = {
    "coco.json": "application/json; charset=utf-8",
    "coco.zip": "application/zip",
    "yolo.zip": "application/zip",
    "masks.zip": "application/zip",
}
CHUNK_ROWS = 500
# Mask files read at once, ahead of the one being written.
READ_AHEAD = 8
# What a stream hands on at a time: small enough to keep memory flat, large enough that a
# 10,000-annotation file is not 10,000 writes to the socket.
OUT_CHUNK = 64 * 1024
# A mask scored this close under min_score still passes (as the viewer's threshold does).
SCORE_SLACK = 1e-9
BBOX_FORMAT = "[x, y, width, height] in pixels of the upright image"


# --- options ------------------------------------------------------------------------------------


class BadOptions(ValueError):
    """A query parameter that makes no sense; the message says why, for people."""


@dataclass(frozen=True)
class Options:
    min_score: float = 0.0
    include_images: bool = False


PARAMETERS = ("min_score", "images")
# A number as an HTML number field sends it ("0.5", ".5", "5e-1"); not "nan", "inf" or "0_5".
_NUMBER = re.compile(r"-?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][-+]?[0-9]{1,3})?")


def parse_options(query: Any) -> Options:
    """``Options`` from a QueryDict (or a plain mapping of strings). Raises BadOptions."""
    items = query.lists() if hasattr(query, "lists") else ((k, [v]) for k, v in query.items())
    values: dict[str, str] = {}
    for name, given in items:
        if name not in PARAMETERS:
            raise BadOptions(
                f"Unknown parameter {_show(name)}: use {', '.join(PARAMETERS)} (or none)."
            )
        if len(given) != 1:
            raise BadOptions(f"{name} is given {len(given)} times; give it once.")
        values[name] = given[0]
    options: dict[str, Any] = {}
    if values.get("min_score", "").strip():  # a cleared form field is the default
        text = values["min_score"].strip()
        if not _NUMBER.fullmatch(text) or not 0.0 <= float(text) <= 1.0:
            raise BadOptions(
                f"min_score is a number from 0 to 1, such as 0.5, not {_show(values['min_score'])}."
            )
        options["min_score"] = max(0.0, float(text))  # not -0.0
    if "images" in values:
        if values["images"] not in ("0", "1"):
            raise BadOptions(
                f"images is 1 (put the images in) or 0 (leave them out), "
                f"not {_show(values['images'])}."
            )
        options["include_images"] = values["images"] == "1"
    return Options(**options)


def _show(value: str) -> str:
    return repr(value if len(value) <= 20 else value[:20] + "…")


# --- what goes in -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetImage:
    id: int
    position: int
    file_name: str  # unique in the dataset: "0001-street-corner.jpg"
    width: int  # as the person sees it, as the masks are
    height: int
    item: BatchItem
    image: SourceImage
    unanswered: tuple[str, ...]  # concepts without a succeeded run for this image

    @property
    def stem(self) -> str:
        return self.file_name.rsplit(".", 1)[0]


@dataclass(frozen=True)
class DatasetInstance:
    mask: Mask
    position: int  # of its image's item
    concept: str
    category_id: int
    size: tuple[int, int]  # (width, height) of its image

    @property
    def number(self) -> int:
        return self.mask.number


def _kept_items(batch: Batch) -> QuerySet[BatchItem]:
    return BatchItem.objects.filter(
        batch=batch, state=BatchItem.State.ACCEPTED, rejected=False, image__isnull=False
    )


def images(batch: Batch) -> Iterator[DatasetImage]:
    """The dataset's images in position order, each with the concepts it has no answer for."""
    concepts = list(batch.concepts)
    answered = (
        BatchRun.objects.filter(
            batch=batch,
            item__state=BatchItem.State.ACCEPTED,
            item__rejected=False,
            run__status=Run.Status.SUCCEEDED,
        )
        .order_by("item__position")
        .values_list("item__position", "concept")
        .iterator(chunk_size=CHUNK_ROWS)
    )
    pending = next(answered, None)
    items = _kept_items(batch).select_related("image").order_by("position")
    for item in items.iterator(chunk_size=CHUNK_ROWS):
        image = item.image
        assert image is not None  # filtered so
        done: set[str] = set()
        while pending is not None and pending[0] <= item.position:
            if pending[0] == item.position:
                done.add(pending[1])
            pending = next(answered, None)
        yield DatasetImage(
            id=item.position + 1,
            position=item.position,
            file_name=image_file_name(item),
            width=image.width,
            height=image.height,
            item=item,
            image=image,
            unanswered=tuple(c for c in concepts if c not in done),
        )


def instances(batch: Batch, min_score: float = 0.0) -> Iterator[DatasetInstance]:
    """The kept masks, by image position, then cell, then instance number (not read yet)."""
    masks = Mask.objects.filter(
        run__status=Run.Status.SUCCEEDED,
        # One filter() call: the conditions on the cell are about one and the same cell.
        run__batch_cells__batch=batch,
        run__batch_cells__concept__in=list(batch.concepts),
        run__batch_cells__item__state=BatchItem.State.ACCEPTED,
        run__batch_cells__item__rejected=False,
        run__batch_cells__item__image__isnull=False,
    ).exclude(file="")
    if min_score > 0:
        masks = masks.filter(score__gte=min_score - SCORE_SLACK)
    masks = (
        masks.exclude(Exists(Rejection.objects.filter(batch=batch, mask=OuterRef("pk"))))
        .annotate(
            cell_id=F("run__batch_cells__id"),
            cell_concept=F("run__batch_cells__concept"),
            item_position=F("run__batch_cells__item__position"),
            image_width=F("run__batch_cells__item__image__width"),
            image_height=F("run__batch_cells__item__image__height"),
        )
        .order_by("item_position", "cell_id", "index")
    )
    for mask in masks.iterator(chunk_size=CHUNK_ROWS):
        extra: Any = mask
        yield DatasetInstance(
            mask=mask,
            position=extra.item_position,
            concept=extra.cell_concept,
            category_id=batch.category_id(extra.cell_concept),
            size=(extra.image_width, extra.image_height),
        )


def by_image(
    batch: Batch, min_score: float = 0.0
) -> Iterator[tuple[DatasetImage, Iterator[DatasetInstance]]]:
    """Each image with its instances, both read as one pass over each query. Like
    itertools.groupby, an image's instances must be used before the next image is taken."""
    found = instances(batch, min_score)
    pending = next(found, None)

    def of(position: int) -> Iterator[DatasetInstance]:
        nonlocal pending
        while pending is not None and pending.position <= position:
            current, pending = pending, next(found, None)
            if current.position == position:
                yield current

    for image in images(batch):
        group = of(image.position)
        yield image, group
        for _ in group:  # whatever the caller left
            pass


# --- reading masks ------------------------------------------------------------------------------


@dataclass
class Decoded:
    """A kept mask read from storage: its stored bytes, and as a mode "1" image."""

    instance: DatasetInstance
    data: bytes
    image: Image.Image

    @property
    def bbox(self) -> list[int]:
        box = self.image.getbbox()
        x0, y0, x1, y1 = box or (0, 0, 0, 0)
        return [x0, y0, x1 - x0, y1 - y0]


def _read_ahead(
    found: Iterable[DatasetInstance],
) -> Iterator[tuple[DatasetInstance, Future[bytes]]]:
    """Each instance with its file being read, READ_AHEAD at a time: from a bucket every read
    is a round trip, so they overlap (the storage gives each thread its own connection)."""
    with ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="dataset-read") as pool:
        window: deque[tuple[DatasetInstance, Future[bytes]]] = deque()
        for inst in found:
            window.append((inst, pool.submit(read_file, inst.mask.file)))
            if len(window) >= READ_AHEAD:
                yield window.popleft()
        while window:
            yield window.popleft()


def _decoded(found: Iterable[DatasetInstance]) -> Iterator[Decoded]:
    """Each instance whose file can still be read, decoded; a few files in memory at a time
    (those read ahead), one decoded. A file gone missing or unreadable since it was copied is
    left out (and logged), rather than breaking a download that is already under way."""
    for inst, reading in _read_ahead(found):
        try:
            data = reading.result()
            image = _mask_image(data, inst.size)
        except FileNotFoundError:
            log.warning("Mask %s of run %s: its file is missing", inst.number, inst.mask.run_id)
            continue
        except Exception as exc:
            if storage_unavailable(exc):
                # Not this file's fault: a dataset without it would be quietly incomplete.
                raise
            log.exception(
                "Mask %s of run %s: its file is unreadable", inst.number, inst.mask.run_id
            )
            continue
        yield Decoded(inst, data, image)


# --- names --------------------------------------------------------------------------------------

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def image_file_name(item: BatchItem) -> str:
    """ "0001-<slug of the name the batch was given>.<extension of our copy>": the position makes
    it unique, the slug makes it safe anywhere (ASCII, no folders, no dots)."""
    image = item.image
    assert image is not None
    given = item.name or image.original_name or ""
    given = given.split("?", 1)[0].split("#", 1)[0].replace("\\", "/").rsplit("/", 1)[-1]
    stem = given.rsplit(".", 1)[0] if "." in given else given
    slug = slugify(stem)[:60].strip("-_") or image.sha256[:12]
    stored = (image.file.name or "").rsplit("/", 1)[-1]
    extension = stored.rsplit(".", 1)[-1].lower() if "." in stored else ""
    if not re.fullmatch(r"[a-z0-9]{1,5}", extension):
        extension = _EXTENSIONS.get(image.content_type, "img")
    return f"{item.position + 1:04d}-{slug}.{extension}"


def concept_slugs(batch: Batch) -> dict[str, str]:
    """A file-safe name per concept, different for every concept ("cat", "cat!" and "猫" give
    "cat", "cat-2" and "concept-3")."""
    slugs: dict[str, str] = {}
    taken: set[str] = set()
    for index, concept in enumerate(batch.concepts, start=1):
        base = slugify(concept)[:40].strip("-_") or "concept"
        slug = base if base != "concept" else f"concept-{index}"
        n = index
        while slug in taken:
            slug = f"{base}-{n}"
            n += 1
        taken.add(slug)
        slugs[concept] = slug
    return slugs


def download_name(batch: Batch, fmt: str) -> str:
    """ "<batch name slug>.<fmt>", ASCII only."""
    slug = slugify(batch.name)[:60].strip("-_") or f"batch-{batch.pk}"
    return f"{slug}.{fmt}"


# --- COCO ---------------------------------------------------------------------------------------


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


def categories(batch: Batch) -> list[dict[str, Any]]:
    return [{"id": batch.category_id(c), "name": c, "supercategory": ""} for c in batch.concepts]


def _info(batch: Batch, options: Options, url: str) -> dict[str, Any]:
    now = timezone.now()
    return {
        "description": f"SAM 3 batch: {batch}",
        "url": url,
        "version": "1.0",
        "year": now.year,
        "contributor": "sam3web",
        "date_created": now.isoformat(),
        "sam3web": {
            "batch": batch.pk,
            "name": batch.name,
            "concepts": list(batch.concepts),
            "min_score": options.min_score,
            "options": batch.options,
        },
    }


def _coco_image(image: DatasetImage) -> dict[str, Any]:
    return {
        "id": image.id,
        "file_name": image.file_name,
        "width": image.width,
        "height": image.height,
        "sam3web": {
            "item": image.item.pk,
            "sha256": image.image.sha256,
            "unanswered": list(image.unanswered),
        },
    }


def coco_annotation(decoded: Decoded, annotation_id: int, image_id: int) -> dict[str, Any]:
    """One instance as COCO: compressed RLE, area and [x, y, w, h] box from the mask itself."""
    inst = decoded.instance
    width, height = inst.size
    counts = rle_counts(decoded.image)
    annotation: dict[str, Any] = {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": inst.category_id,
        "segmentation": {"size": [height, width], "counts": rle_string(counts)},
        "area": rle_area(counts),
        "bbox": decoded.bbox,
        "iscrowd": 0,
    }
    if inst.mask.score is not None:
        annotation["score"] = inst.mask.score
    annotation["sam3web"] = {"run": str(inst.mask.run_id), "mask": inst.number}
    return annotation


def coco_json(batch: Batch, options: Options = Options(), *, url: str = "") -> Iterator[bytes]:
    """COCO instance segmentation as a stream of bytes: one entry per line, written as it is
    made. ``options.include_images`` is not looked at (see coco_zip)."""
    yield b'{"info": ' + _dumps(_info(batch, options, url)) + b',\n"licenses": [],\n"images": ['
    sep = b"\n"
    # Images and annotations are two queries: an image rejected in between must not leave
    # annotations of an image the file does not list. (One int per image, not per mask.)
    listed: set[int] = set()
    for image in images(batch):
        listed.add(image.position)
        yield sep + _dumps(_coco_image(image))
        sep = b",\n"
    yield b'\n],\n"categories": ' + _dumps(categories(batch)) + b',\n"annotations": ['
    sep = b"\n"
    found = (i for i in instances(batch, options.min_score) if i.position in listed)
    for annotation_id, decoded in enumerate(_decoded(found), start=1):
        image_id = decoded.instance.position + 1
        yield sep + _dumps(coco_annotation(decoded, annotation_id, image_id))
        sep = b",\n"
    yield b"\n]}\n"


def coco_zip(batch: Batch, options: Options = Options(), *, url: str = "") -> Iterator[bytes]:
    """annotations.json (coco_json) and, with include_images, images/<file_name>."""
    archive = StreamingZip()
    yield from archive.add_stream("annotations.json", coco_json(batch, options, url=url))
    if options.include_images:
        for image in images(batch):
            yield from _add_image(archive, image)
    yield from archive.close()


def _add_image(archive: StreamingZip, image: DatasetImage) -> Iterator[bytes]:
    try:
        yield from archive.add_file(f"images/{image.file_name}", image.image.file)
    except FileNotFoundError:
        log.warning("Image %s of batch item %s: its file is missing", image.id, image.item.pk)


# --- YOLO ---------------------------------------------------------------------------------------


def yolo_zip(batch: Batch, options: Options = Options()) -> Iterator[bytes]:
    """Ultralytics' YOLO segmentation layout: data.yaml, classes.txt, labels/<stem>.txt for
    every image (empty when nothing was found: a background image) and, with include_images,
    images/<file_name>."""
    archive = StreamingZip()
    yield from archive.add_bytes("data.yaml", data_yaml(batch).encode(), compress=True)
    classes = "".join(_one_line(c) + "\n" for c in batch.concepts)
    yield from archive.add_bytes("classes.txt", classes.encode(), compress=True)
    for image, found in by_image(batch, options.min_score):
        if options.include_images:
            yield from _add_image(archive, image)
        lines = [yolo_line(d) for d in _decoded(found)]
        label = "".join(line + "\n" for line in lines if line)
        yield from archive.add_bytes(f"labels/{image.stem}.txt", label.encode(), compress=True)
    yield from archive.close()


def data_yaml(batch: Batch) -> str:
    # JSON strings are YAML strings: any concept is quoted safely.
    names = "".join(
        f"  {index}: {json.dumps(_one_line(c), ensure_ascii=False)}\n"
        for index, c in enumerate(batch.concepts)
    )
    return (
        f"# {_one_line(str(batch))}, exported from sam3web\n"
        "path: .\ntrain: images\nval: images\n"
        f"nc: {len(batch.concepts)}\n" + ("names:\n" + names if names else "names: {}\n")
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def yolo_line(decoded: Decoded) -> str:
    """``<class> x1 y1 x2 y2 ...``: the mask's outline normalised to 0..1, or "" when it has
    no area to draw. Holes are not kept (YOLO polygons have none)."""
    import numpy as np

    polygon = outline(np.asarray(decoded.image, dtype=np.uint8))
    if polygon is None:
        return ""
    width, height = decoded.instance.size
    coords = " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in polygon.tolist())
    return f"{decoded.instance.category_id - 1} {coords}"


def outline(mask: np.ndarray) -> np.ndarray | None:
    """The outer contour of a mask (an array, non-zero inside) as an (N, 2) array of pixel
    coordinates, or None when no part of it has 3 points or more.

    An instance in separate parts is one polygon, as YOLO wants one line per instance: the
    parts are joined by zero-width bridges between their closest points, as Ultralytics'
    ``merge_multi_segment`` does for COCO polygons, so filling it covers every part."""
    # Imported here: only this export needs OpenCV, and every web process would carry it.
    import cv2

    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = [c.reshape(-1, 2) for c in contours if len(c) >= 3]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return merge_parts(parts)


def merge_parts(parts: list[np.ndarray]) -> np.ndarray:
    """One closed walk through every ring: out along the first ring to the point closest to
    the next, into that ring, and so on; each ring is walked whole once, and the walk comes
    back over the same bridges."""
    import numpy as np

    links: list[list[int]] = [[] for _ in parts]  # [entry] or [entry, exit] per ring
    links[0].append(0)
    for i in range(1, len(parts)):
        exit_, entry = _closest(parts[i - 1], parts[i])
        links[i - 1].append(exit_)
        links[i].append(entry)
    forward: list[np.ndarray] = []
    back: list[np.ndarray] = []
    for ring, link in zip(parts, links, strict=True):
        entry = link[0]
        rolled = np.roll(ring, -entry, axis=0)
        closed = np.concatenate([rolled, rolled[:1]])  # entry ... back to entry
        if len(link) == 1:  # the last ring: all of it
            forward.append(closed)
            continue
        turn = (link[1] - entry) % len(ring)
        forward.append(closed[: turn + 1])
        back.append(closed[turn:])
    return np.concatenate(forward + back[::-1])


def _closest(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indexes of the closest pair of points of a and b, a slice of a at a time (a whole
    distance matrix of two long outlines would be hundreds of MB)."""
    import numpy as np

    best = (-1, -1, np.inf)
    bf = b.astype(np.float64)
    step = max(1, 250_000 // max(1, len(b)))  # about 6 MB of distances at a time
    for start in range(0, len(a), step):
        chunk = a[start : start + step].astype(np.float64)
        d = ((chunk[:, None, :] - bf[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < best[2]:
            best = (start + int(i), int(j), float(d[i, j]))
    return best[0], best[1]


# --- ZIP of masks -------------------------------------------------------------------------------


def masks_zip(batch: Batch, options: Options = Options(), *, url: str = "") -> Iterator[bytes]:
    """``<image stem>/<concept slug>-<n>.png`` per kept instance (a 1-bit PNG at the image's
    size: our stored copy byte for byte), images/<file_name> with include_images, and
    instances.json describing every image and instance."""
    slugs = concept_slugs(batch)
    archive = StreamingZip()
    # The two lists of instances.json go to disk as they are made, then into the ZIP last.
    with tempfile.TemporaryFile() as image_rows, tempfile.TemporaryFile() as instance_rows:
        image_sep = instance_sep = b"\n"
        for image, found in by_image(batch, options.min_score):
            if options.include_images:
                yield from _add_image(archive, image)
            image_rows.write(image_sep + _dumps(_described_image(image)))
            image_sep = b",\n"
            for decoded in _decoded(found):
                inst = decoded.instance
                data = decoded.data
                if not _is_plain_mask(data, inst.size):
                    buf = io.BytesIO()
                    decoded.image.save(buf, "PNG")
                    data = buf.getvalue()
                name = f"{image.stem}/{slugs[inst.concept]}-{inst.number}.png"
                yield from archive.add_bytes(name, data, compress=False)
                row = {
                    "file": name,
                    "image": image.file_name,
                    "image_id": image.id,
                    "concept": inst.concept,
                    "category_id": inst.category_id,
                    "score": inst.mask.score,
                    "bbox": decoded.bbox,
                    "area": decoded.image.histogram()[255],
                    "run": str(inst.mask.run_id),
                    "mask": inst.number,
                }
                instance_rows.write(instance_sep + _dumps(row))
                instance_sep = b",\n"
        head = {
            "info": _info(batch, options, url),
            "categories": categories(batch),
            "bbox_format": BBOX_FORMAT,
        }
        opening = _dumps(head)[:-1] + b',\n"images": ['
        parts = [
            iter([opening]),
            _read_back(image_rows),
            iter([b'\n],\n"instances": [']),
            _read_back(instance_rows),
            iter([b"\n]}\n"]),
        ]
        yield from archive.add_stream("instances.json", (c for part in parts for c in part))
    yield from archive.close()


def _described_image(image: DatasetImage) -> dict[str, Any]:
    return {
        "id": image.id,
        "file_name": image.file_name,
        "width": image.width,
        "height": image.height,
        "unanswered": list(image.unanswered),
    }


def _read_back(f: IO[bytes]) -> Iterator[bytes]:
    f.seek(0)
    while chunk := f.read(OUT_CHUNK):
        yield chunk


# --- streaming ZIP ------------------------------------------------------------------------------


class _Sink:
    """A write-only file that keeps what it is given until it is taken: zipfile finds it cannot
    seek and writes each entry's CRC and sizes in a data descriptor after its data. What it
    holds stays in memory up to a few pieces, on disk beyond (the central directory of a ZIP
    of many thousand masks is written in one go)."""

    def __init__(self) -> None:
        self._spool = self._new()
        self.size = 0

    @staticmethod
    def _new() -> tempfile.SpooledTemporaryFile[bytes]:
        return tempfile.SpooledTemporaryFile(max_size=4 * OUT_CHUNK)

    def write(self, data: bytes) -> int:
        written = self._spool.write(data)
        self.size += written
        return written

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._spool.close()

    def take(self) -> Iterator[bytes]:
        self._spool.seek(0)
        while chunk := self._spool.read(OUT_CHUNK):
            yield chunk
        # A spool that went to disk stays there: start a new one in memory.
        self._spool.close()
        self._spool = self._new()
        self.size = 0


class _SpilledEntries(list[zipfile.ZipInfo]):
    """zipfile's list of the entries written, which it keeps for the central directory at the
    end: pickled to a temporary file instead of kept, since a ZipInfo is about 1 KB and a
    batch may have hundreds of thousands of masks. zipfile only appends, counts and iterates
    it when writing."""

    def __init__(self) -> None:
        super().__init__()
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the ZIP)
        self._count = 0

    def append(self, info: zipfile.ZipInfo) -> None:
        pickle.dump(info, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[zipfile.ZipInfo]:
        self._file.seek(0)
        for _ in range(self._count):
            yield pickle.load(self._file)  # our own file, written just above

    def close(self) -> None:
        self._file.close()


class _NoNames(dict[str, zipfile.ZipInfo]):
    """zipfile's index of entries by name, only used while writing to warn of a name given
    twice (ours never are): not kept, for the same reason."""

    def __setitem__(self, name: str, info: zipfile.ZipInfo) -> None:
        pass


class StreamingZip:
    """A ZIP built entry by entry; each method yields the bytes that entry added. Memory holds
    one entry's pieces at a time, however many entries there are."""

    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", zipfile.ZIP_DEFLATED)
        self._entries = _SpilledEntries()
        self._zip.filelist = self._entries
        self._zip.NameToInfo = _NoNames()
        self._when = timezone.localtime().timetuple()[:6]

    def _info(self, name: str, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, self._when)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = (stat.S_IFREG | 0o644) << 16  # a plain file, rw-r--r--
        return info

    def _drain(self, at_least: int = 1) -> Iterator[bytes]:
        if self._sink.size >= at_least:
            yield from self._sink.take()

    def add_bytes(self, name: str, data: bytes, *, compress: bool) -> Iterator[bytes]:
        self._zip.writestr(self._info(name, compress), data)
        yield from self._drain()

    def add_stream(self, name: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """A deflated entry of unknown length (ZIP64 sizes allowed: a JSON may pass 4 GiB)."""
        with self._zip.open(self._info(name, True), "w", force_zip64=True) as dest:
            for chunk in chunks:
                dest.write(chunk)
                yield from self._drain(OUT_CHUNK)
        yield from self._drain()

    def add_file(self, name: str, file: FieldFile) -> Iterator[bytes]:
        """A stored file, stored (images are compressed already), read a piece at a time.
        Raises FileNotFoundError before writing anything when it is missing."""
        f = file.open("rb")
        try:
            info = self._info(name, False)
            info.file_size = file.size  # ZIP64 is decided on it
            with self._zip.open(info, "w") as dest:
                while chunk := f.read(OUT_CHUNK):
                    dest.write(chunk)
                    yield from self._drain(OUT_CHUNK)
        finally:
            f.close()
        yield from self._drain()

    def close(self) -> Iterator[bytes]:
        self._zip.close()
        self._entries.close()
        yield from self._drain()
        self._sink.close()


def rechunk(chunks: Iterable[bytes], size: int = OUT_CHUNK) -> Iterator[bytes]:
    """The same bytes in pieces of about ``size``: many small writes become few."""
    parts: list[bytes] = []
    held = 0
    for chunk in chunks:
        parts.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(parts)
            parts.clear()
            held = 0
    if parts:
        yield b"".join(parts)


def stream(batch: Batch, fmt: str, options: Options, *, url: str = "") -> Iterator[bytes]:
    """The bytes of ``fmt`` (a key of FORMATS), in pieces of about OUT_CHUNK."""
    if fmt == "coco.json":
        chunks = coco_json(batch, options, url=url)
    elif fmt == "coco.zip":
        chunks = coco_zip(batch, options, url=url)
    elif fmt == "yolo.zip":
        chunks = yolo_zip(batch, options)
    elif fmt == "masks.zip":
        chunks = masks_zip(batch, options, url=url)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return rechunk(chunks)
