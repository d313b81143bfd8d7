"""Realistic runs for demos and benchmarks (``manage.py seed_runs``).

A team's history as it would look after a year and a half: teammates (alice, bob, ...) with
more runs the more recent, on working days and hours; mostly succeeded runs, some failed,
refused (not submitted), stale or canceled, and the last few minutes' runs still at Runflow;
text concepts, points, boxes and combinations; varied options; Runflow's duration and cost
(some costs not arrived yet, so pages show an estimate); and for succeeded runs the files the
real copy task makes: 1-bit PNG masks at the image's size, the overlay and the thumbnail,
drawn by the same ``segmentation.artifacts`` functions.

Speed: drawing masks costs milliseconds (seconds for a 12 MP photo), so each image gets a
small pool of pre-rendered variants (a set of masks with their overlay and thumbnail) that
many runs reuse. Every run still gets files of its own, under its own names, so deleting a run
removes exactly its files and nothing another run shows:

* by default each file is a fresh copy of the variant's bytes;
* with ``fast=True`` (``--fast``) each file is a hard link to the variant's first copy: a name
  of its own for the run, the bytes shared by the file system. Deleting a run unlinks its
  names only; the bytes live on while another run links them. A link costs a third of a
  small write, and the disk does not grow (100,000 runs: 430,000 files in 37 MB). Where
  links are not possible (another file system, a storage without paths, the link limit) the
  copy is written instead.

Rows are written with ``bulk_create`` in batches of 1,000, one transaction each; a batch whose
rows could not be written removes the files it wrote (the batches before it stay).

For benchmarks at a million runs there is a third way, ``shared=True``: every run of a variant
names the same files (one set of masks, one overlay, one thumbnail per variant, written once
under masks/seed/, overlays/seed/ and thumbs/seed/), and rows go in chunks of 20,000 (on
PostgreSQL by COPY, which also keeps the history's dates without a second UPDATE per row).
Deleting such a run deletes files other runs show: it is for measuring pages, not for demos.

Everything random comes from one generator seeded by ``seed`` and the number of runs already
stored, so the same call on the same database makes the same runs (ids included), and
seeding again adds new ones.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import os
import random
import time
import uuid
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Field, Min, Model
from django.db.models.fields.files import FieldFile
from PIL import Image, ImageDraw

from segmentation.engines.runflow.client import build_create_body
from segmentation.imaging import masks as mask_files
from segmentation.imaging import render
from segmentation.imaging.decode import ImageRejected
from segmentation.imaging.intake import intake_bytes
from segmentation.imaging.store import store_image
from segmentation.models import Mask, Run, SourceImage

TEAM = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "niaj",
    "olivia",
    "peggy",
    "rupert",
    "sybil",
    "trent",
    "victor",
    "walter",
    "yvonne",
]
HISTORY_DAYS = 548  # about 18 months
BATCH = 1000
SHARED_BATCH = 20_000
SHARED_TEMPLATES = 20_000
# Variants pre-rendered per image (masks + overlay + thumbnail); fewer for large photos,
# whose masks take a second each to draw and encode.
VARIANTS = 12
VARIANTS_LARGE = 3
LARGE_PIXELS = 4_000_000
MIN_SIDE = 16  # tiny-1x1.png and the like: nobody segments them

# Text concepts people would type for each of the shared test photos (by file name prefix).
CONCEPTS: dict[str, list[str]] = {
    "cat": ["cat", "ear", "eye", "whiskers", "nose", "paw", "cat face"],
    "coffee": ["coffee cup", "saucer", "spoon", "coffee", "cup handle", "table"],
    "astronaut": ["person", "face", "helmet", "flag", "spacesuit", "patch"],
    "rocket": ["rocket", "smoke", "launch tower", "sky", "flame"],
    "coins": ["coin", "coins", "round object"],
    "camera": ["person", "camera", "tripod", "grass", "building", "coat"],
    "horse": ["horse", "animal", "leg"],
    "large": ["wheel", "car", "tree", "window", "person", "building", "road sign"],
}
GENERIC_CONCEPTS = ["object", "wheel", "person", "tree", "window", "bottle", "chair", "dog"]
METADATA = [{"project": "catalog"}, {"project": "demo"}, {"project": "qa"}, {"ticket": "SEG-42"}]

FAILURES = [
    ("MODEL_ERROR", "inference", "The model failed to process the image."),
    ("INFERENCE_TIMEOUT", "inference", "Inference did not finish within 120 seconds."),
    ("INPUT_INVALID", "preprocessing", "The image could not be decoded by the model."),
    ("OUT_OF_MEMORY", "inference", "The worker ran out of GPU memory."),
]
REFUSALS = [
    (402, "INSUFFICIENT_CREDIT", "Your organization has insufficient credit."),
    (401, "UNAUTHORIZED", "Invalid API key."),
    (422, "VALIDATION_ERROR", "input.max_masks: Input should be less than or equal to 32"),
    (503, "MODEL_UNAVAILABLE", "The model is temporarily unavailable. Try again later."),
]


@dataclass
class SeedReport:
    runs: int = 0
    masks: int = 0
    files: int = 0
    linked: int = 0  # of the files, how many are hard links to a variant's first copy
    users: list[str] = field(default_factory=list)
    users_created: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    variants: int = 0
    seconds: float = 0.0
    render_seconds: float = 0.0


@dataclass
class _Variant:
    """Masks SAM 3 could have found on one image, with the overlay and thumbnail of them."""

    masks: list[mask_files.NormalizedMask]
    centres: list[tuple[int, int]]
    overlay: bytes
    thumbnail: bytes


@dataclass
class _Image:
    name: str
    row: SourceImage
    data: bytes  # the stored file, as the thumbnail is drawn from it
    concepts: list[str]
    variants: list[_Variant | None]


class _Files:
    """Writes a run's own files under MEDIA_ROOT, as copies or hard links of variant bytes."""

    def __init__(self, link: bool, shared: bool = False) -> None:
        self.link = link
        self.shared = shared
        self.shared_names: set[str] = set()
        self.dirs: set[Path] = set()
        self.first: dict[tuple[int, str], Path] = {}
        self.written: list[str] = []
        self.files = 0
        self.linked = 0
        try:
            default_storage.path("x")
            self.has_paths = True
        except NotImplementedError:  # a storage without local paths: go through its API
            self.has_paths = False

    def write(self, name: str, data: bytes, key: tuple[int, str]) -> None:
        self.files += 1
        if not self.has_paths:
            saved = default_storage.save(name, ContentFile(data))
            if saved != name:
                raise RuntimeError(f"{name} exists already in the storage")
            self.written.append(name)
            return
        path = Path(default_storage.path(name))
        if path.parent not in self.dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.dirs.add(path.parent)
        first = self.first.get(key) if self.link else None
        if first is not None:
            try:
                os.link(first, path)
            except OSError:
                pass  # the first copy is gone, too many links, no link support: copy below
            else:
                self.written.append(name)
                self.linked += 1
                return
        with open(path, "xb") as f:  # never over another run's file
            f.write(data)
        self.written.append(name)
        if self.link:
            self.first[key] = path

    def write_shared(self, name: str, data: bytes) -> None:
        """A file many runs name: written the first time, left alone after (and kept when a
        batch fails, since runs of earlier batches or seedings name it too)."""
        if name in self.shared_names:
            return
        self.shared_names.add(name)
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(data))
            self.files += 1

    def forget_batch(self, remove: bool) -> None:
        if remove:
            for name in self.written:
                default_storage.delete(name)
            # The first copies may be among what was removed.
            self.first = {k: p for k, p in self.first.items() if p.exists()}
        self.written = []


def default_images_dir() -> Path:
    return Path(__file__).resolve().parent / "sample_images"


def seed_runs(
    n: int,
    *,
    users: int = 5,
    seed: int = 0,
    images_dir: Path | str | None = None,
    fast: bool = False,
    now: dt.datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    password: str | None = None,
    shared: bool = False,
) -> SeedReport:
    """Make ``n`` runs over ``users`` teammates and the images in ``images_dir``; teammates it
    makes sign in with ``password``, or not at all without one. ``shared``: the runs of a
    variant share its files, and rows go in big chunks (see the module's notes)."""
    if n < 0:
        raise ValueError("the number of runs must not be negative")
    if not 1 <= users <= 1000:
        raise ValueError("teammates must be between 1 and 1000")
    started = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC)
    existing = Run.objects.count()
    rng = random.Random(f"sam3web-seed:{seed}:{existing}")
    report = SeedReport()

    team = _teammates(users, report, password)
    pool = _images(Path(images_dir) if images_dir else default_images_dir(), report)
    owner_weights = [1 / (rank + 1) ** 0.8 for rank in range(len(team))]
    rng.shuffle(owner_weights)
    image_weights = [0.4 if im.row.width * im.row.height > LARGE_PIXELS else 1.0 for im in pool]

    ages = sorted((_age(rng) for _ in range(n)), reverse=True)  # oldest first
    zone = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    files = _Files(link=fast, shared=shared)
    made = 0
    last_by_owner: dict[int, Run] = {}
    chunk = SHARED_BATCH if shared else BATCH
    # On PostgreSQL with shared files, most runs repeat a template run in SQL (_replicate):
    # every `every`-th run, and every run of the last hour (some still in flight), is made
    # one by one; the rest keep only their own id, owner and time.
    replicate = shared and connection.vendor == "postgresql" and n > SHARED_TEMPLATES
    every = math.ceil(n / SHARED_TEMPLATES) if replicate else 1
    replicas: list[tuple[uuid.UUID, Any, dt.datetime]] = []
    templates: list[tuple[uuid.UUID, str]] = []
    for start in range(0, n, chunk):
        runs: list[Run] = []
        masks: list[Mask] = []
        for number, age in enumerate(ages[start : start + chunk], start):
            created = _working_hours(now - age, now, zone, rng)
            owner = rng.choices(team, owner_weights)[0]
            if replicate and number % every and age > dt.timedelta(hours=1):
                replicas.append((_uuid(rng), owner.pk, created))
                continue
            parent = last_by_owner.get(owner.pk)
            # Someone refining their last run ("Edit as a new run"): same image, minutes later.
            follows = parent is not None and dt.timedelta(
                0
            ) < created - parent.created_at < dt.timedelta(hours=2)
            if parent is not None and follows and rng.random() < 0.6:
                image = next(im for im in pool if im.row.pk == parent.image_id)
            else:
                image, parent = rng.choices(pool, image_weights)[0], None
            run, run_masks = _make_run(rng, report, image, owner, parent, created, now, files)
            last_by_owner[owner.pk] = run
            runs.append(run)
            masks += run_masks
            if replicate and run.status in Run.FINAL_STATUSES:
                templates.append((run.pk, str(run.status)))
        try:
            with transaction.atomic():
                if shared and connection.vendor == "postgresql":
                    _copy(Run, runs)
                    _copy(Mask, masks)
                else:
                    dates = [(run.created_at, run.updated_at) for run in runs]
                    Run.objects.bulk_create(runs)
                    _restore_dates(runs, dates)
                    Mask.objects.bulk_create(masks)
        except BaseException:
            files.forget_batch(remove=True)
            raise
        files.forget_batch(remove=False)
        made += len(runs)
        report.masks += len(masks)
        if progress is not None and runs:
            progress(made, n)
    if replicas:
        report.masks += _replicate(replicas, templates, rng, report)
        made += len(replicas)
        if progress is not None:
            progress(made, n)

    # An image is as old as its first run (store_image stamped it with the present).
    firsts = Run.objects.order_by().values("image").annotate(first=Min("created_at"))
    for row in firsts.filter(image__in=[im.row.pk for im in pool]):
        SourceImage.objects.filter(pk=row["image"], created_at__gt=row["first"]).update(
            created_at=row["first"]
        )

    report.runs = made
    report.files = files.files
    report.linked = files.linked
    report.variants = sum(1 for im in pool for v in im.variants if v is not None)
    report.seconds = time.perf_counter() - started
    return report


def _copy(model: type[Model], rows: list[Any]) -> None:
    """Insert ``rows`` with PostgreSQL's COPY: no SQL to build per row, and the values as the
    objects hold them (created_at included: COPY runs no pre_save). An unset automatic key is
    left to its sequence."""
    if not rows:
        return
    qn = connection.ops.quote_name
    fields: list[Field[Any, Any]] = [
        f
        for f in model._meta.concrete_fields
        if not (f.primary_key and getattr(rows[0], f.attname) is None)
    ]
    columns = ", ".join(qn(str(f.column)) for f in fields)
    json_fields = {f.attname for f in fields if f.get_internal_type() == "JSONField"}
    from psycopg.types.json import Jsonb

    def value(field: Field[Any, Any], obj: Any) -> Any:
        v = getattr(obj, field.attname)
        if v is None:
            return None
        if field.attname in json_fields:
            return Jsonb(v)
        if isinstance(v, enum.Enum):  # psycopg would send a choice's name, not its value
            return v.value
        if isinstance(v, FieldFile):
            return v.name or ""
        return v

    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor, under Django's wrapper
        with raw.copy(f"COPY {qn(model._meta.db_table)} ({columns}) FROM STDIN") as copy:
            for obj in rows:
                copy.write_row([value(f, obj) for f in fields])


def _replicate(
    replicas: list[tuple[uuid.UUID, Any, dt.datetime]],
    templates: list[tuple[uuid.UUID, str]],
    rng: random.Random,
    report: SeedReport,
) -> int:
    """Insert each replica (id, owner, created_at) as a copy of a template run drawn at random
    (a settled one: nothing months old is still in flight) with its masks, in two INSERT ...
    SELECTs: its own id (in the request body and Runflow's answer too, where the template's
    id was), owner and provider run id, its times moved with created_at, no parent. The files
    are the template's (shared). Returns the masks made."""
    drawn = [templates[rng.randrange(len(templates))] for _ in replicas]
    for _, status in drawn:
        report.statuses[status] = report.statuses.get(status, 0) + 1
    qn = connection.ops.quote_name
    shift = "(n.created_at - t.created_at)"

    def select(model: type[Model], alias: str, link: str) -> tuple[str, str]:
        columns, values = [], []
        for f in model._meta.concrete_fields:
            col = qn(str(f.column))
            if f.primary_key and model is Mask:
                continue  # a new serial key
            columns.append(col)
            if f.attname == link:
                values.append("n.id")
            elif model is Run and f.attname == "owner_id":
                values.append("n.owner_id")
            elif model is Run and f.attname == "parent_id":
                values.append("NULL")
            elif f.attname == "created_at":
                values.append("n.created_at")
            elif f.get_internal_type() == "DateTimeField":
                values.append(f"{alias}.{col} + {shift}")
            elif model is Run and f.attname == "provider_run_id":
                values.append(
                    f"CASE WHEN t.{col} = '' THEN '' ELSE md5(n.id::text)::uuid::text END"
                )
            elif f.get_internal_type() == "JSONField":
                values.append(f"replace({alias}.{col}::text, t.id::text, n.id::text)::jsonb")
            else:
                values.append(f"{alias}.{col}")
        return ", ".join(columns), ", ".join(values)

    run_table, mask_table = qn(Run._meta.db_table), qn(Mask._meta.db_table)
    run_columns, run_values = select(Run, "t", "id")
    mask_columns, mask_values = select(Mask, "m", "run_id")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE seed_replica (id uuid, template_id uuid, owner_id bigint, "
            "created_at timestamptz) ON COMMIT DROP"
        )
        with cursor.cursor.copy("COPY seed_replica FROM STDIN") as copy:
            for (run_id, owner_id, created), (template_id, _) in zip(replicas, drawn, strict=True):
                copy.write_row((run_id, template_id, owner_id, created))
        cursor.execute(
            f"INSERT INTO {run_table} ({run_columns}) SELECT {run_values} "
            f"FROM seed_replica n JOIN {run_table} t ON t.id = n.template_id"
        )
        cursor.execute(
            f"INSERT INTO {mask_table} ({mask_columns}) SELECT {mask_values} "
            f"FROM seed_replica n JOIN {run_table} t ON t.id = n.template_id "
            f"JOIN {mask_table} m ON m.run_id = t.id"
        )
        return int(cursor.rowcount)


def _restore_dates(runs: list[Run], dates: list[tuple[dt.datetime, dt.datetime]]) -> None:
    """bulk_create stamps auto_now(_add) fields with the present, in the rows and on the
    objects: put the history's own dates back in both. One prepared UPDATE by primary key
    per run (bulk_update builds a CASE expression per row in Python, which costs more than
    the insert itself)."""
    meta = Run._meta
    qn = connection.ops.quote_name
    created_at, updated_at = meta.get_field("created_at"), meta.get_field("updated_at")
    assert meta.pk is not None
    fields = (created_at, updated_at, meta.pk)
    created_col, updated_col, id_col = (qn(str(f.column)) for f in fields)
    sql = (
        f"UPDATE {qn(meta.db_table)} SET {created_col} = %s, {updated_col} = %s WHERE {id_col} = %s"
    )
    rows = []
    for run, (created, updated) in zip(runs, dates, strict=True):
        run.created_at, run.updated_at = created, updated
        rows.append(
            [
                f.get_db_prep_value(value, connection)
                for f, value in zip(fields, (created, updated, run.pk), strict=True)
            ]
        )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


# --- teammates and images -----------------------------------------------------------------


def _teammates(count: int, report: SeedReport, password: str | None) -> list[Any]:
    """The seeded teammates, made when missing: without ``password`` they cannot sign in (a
    seeded install may be on a server; a published password would be a way in)."""
    User = get_user_model()
    names = [
        TEAM[i] if i < len(TEAM) else f"{TEAM[i % len(TEAM)]}{i // len(TEAM) + 1}"
        for i in range(count)
    ]
    found = {u.get_username(): u for u in User.objects.filter(username__in=names)}
    # One hash for all of them: hashing takes a good fraction of a second on purpose.
    hashed = make_password(password) if len(found) < len(names) else ""
    team = []
    for name in names:
        user = found.get(name)
        if user is None:
            user = User(username=name, email=f"{name}@example.com", password=hashed)
            user.save()
            report.users_created.append(name)
        team.append(user)
    report.users = names
    return team


def _concepts(name: str) -> list[str]:
    for prefix, words in CONCEPTS.items():
        if name.startswith(prefix):
            return words
    return GENERIC_CONCEPTS


def _images(folder: Path, report: SeedReport) -> list[_Image]:
    """Every image in the folder (not its subfolders) that the app's intake accepts, stored
    once like an upload. The broken files of the shared folder live in bad/, and a file the
    intake refuses is skipped here anyway."""
    pool: list[_Image] = []
    if not folder.is_dir():
        raise FileNotFoundError(f"no images folder at {folder}")
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() in (".md", ".txt"):
            continue
        try:
            taken = intake_bytes(path.read_bytes())
        except ImageRejected:
            continue
        if min(taken.width, taken.height) < MIN_SIDE:
            continue
        row = store_image(taken, original_name=path.name)
        count = VARIANTS_LARGE if taken.width * taken.height > LARGE_PIXELS else VARIANTS
        pool.append(_Image(path.name, row, taken.data, _concepts(path.name), [None] * count))
        report.images.append(path.name)
    if not pool:
        raise FileNotFoundError(f"no usable images in {folder}")
    return pool


# --- time -----------------------------------------------------------------------------------


def _age(rng: random.Random) -> dt.timedelta:
    """How long ago a run was made: over the last 18 months, more the more recent (the team
    took to it), plus a few minutes' worth of runs still in flight."""
    if rng.random() < 0.002:
        return dt.timedelta(seconds=rng.uniform(5, 600))
    return dt.timedelta(days=HISTORY_DAYS * (1 - math.sqrt(rng.random())))


def _working_hours(
    when: dt.datetime, now: dt.datetime, zone: zoneinfo.ZoneInfo, rng: random.Random
) -> dt.datetime:
    """The same day (or the nearest weekday, mostly) at a working hour, local time; runs of
    the last hour keep their minute-exact time so some are still in flight."""
    if now - when < dt.timedelta(hours=1):
        return when
    local = when.astimezone(zone)
    day = local.date()
    if day.weekday() >= 5 and rng.random() < 0.85:
        # Saturday's work moves to Friday, Sunday's to Monday.
        day += dt.timedelta(days=-1 if day.weekday() == 5 else 1)
    hour = min(21.9, max(7.5, rng.gauss(13.5, 2.6)))
    moment = dt.datetime.combine(day, dt.time(0), tzinfo=zone) + dt.timedelta(
        hours=hour, seconds=rng.uniform(0, 59)
    )
    moment = moment.astimezone(dt.UTC)
    return moment if moment < now - dt.timedelta(hours=1) else when


# --- one run --------------------------------------------------------------------------------


def _status(rng: random.Random, age: dt.timedelta) -> str:
    S = Run.Status
    if age < dt.timedelta(minutes=10) and rng.random() < 0.5:
        return rng.choice([S.QUEUED, S.RUNNING, S.RUNNING])
    roll = rng.random()
    for status, share in (
        (S.FAILED, 0.06),
        (S.NOT_SUBMITTED, 0.03),
        (S.STALE, 0.015),
        (S.CANCELED, 0.005),
    ):
        if roll < share:
            return status
        roll -= share
    return S.SUCCEEDED


def _kind(rng: random.Random) -> tuple[bool, bool, bool]:
    """(text, points, boxes)."""
    return rng.choices(
        [
            (True, False, False),
            (False, True, False),
            (False, False, True),
            (True, True, False),
            (True, False, True),
            (False, True, True),
        ],
        [55, 15, 10, 8, 7, 5],
    )[0]


def _mask_count(rng: random.Random, image: _Image) -> int:
    if image.name.startswith("coins"):
        return rng.choice([1, 3, 8, 12, 16, 24])
    return rng.choices([1, 2, 3, 4, 6, 9], [38, 20, 18, 10, 9, 5])[0]


def _variant(rng: random.Random, image: _Image, report: SeedReport, *, need: bool) -> _Variant:
    """One of the image's variants, drawn the first time it is used. Variant 0 is SAM 3 finding
    nothing (a concept not in the picture): never for a run prompted with points or boxes
    (`need`), and rarely for text."""
    last = len(image.variants) - 1
    index = 0 if not need and rng.random() < 0.05 else rng.randint(1, last)
    variant = image.variants[index]
    if variant is None:
        started = time.perf_counter()
        variant = _render_variant(image, index)
        image.variants[index] = variant
        report.render_seconds += time.perf_counter() - started
    return variant


def _render_variant(image: _Image, index: int) -> _Variant:
    """Masks as the copy task keeps them: drawn as Runflow would send them (a grey PNG), then
    through normalize_mask; the overlay and thumbnail by render_overlay/render_thumbnail."""
    row = image.row
    rng = random.Random(f"sam3web-variant:{row.sha256}:{index}")
    width, height = row.width, row.height
    # Variant 0 of every image is SAM 3 finding nothing (a text concept not in the picture).
    count = 0 if index == 0 else _mask_count(rng, image)
    masks: list[mask_files.NormalizedMask] = []
    centres: list[tuple[int, int]] = []
    side = min(width, height)
    for number in range(count):
        cx, cy = rng.randrange(width), rng.randrange(height)
        radius = side * rng.uniform(0.06, 0.28) / math.sqrt(max(1, count) / 2)
        corners = rng.randint(9, 18)
        outline = []
        for k in range(corners):
            angle = 2 * math.pi * k / corners
            r = max(2.0, radius * rng.uniform(0.7, 1.25))
            outline.append((cx + r * math.cos(angle), cy + r * math.sin(angle) * 0.8))
        sent = Image.new("L", (width, height), 0)
        ImageDraw.Draw(sent).polygon(outline, fill=255)
        mask = mask_files.normalize_mask(
            _png(sent), width, height, what=f"mask {number + 1} of a seeded run", provider=""
        )
        if mask.bbox is None:  # entirely outside the picture: not an instance
            continue
        masks.append(mask)
        x0, y0, x1, y1 = mask.bbox
        inside = (min(max(cx, x0), x1 - 1), min(max(cy, y0), y1 - 1))
        centres.append(inside)
    # As Engine.store_result: an overlay even of no masks (a clear one), and the thumbnail
    # of the picture with it.
    overlay = render.render_overlay(
        ((m.png, render.colour_for(i)) for i, m in enumerate(masks)), width, height
    )
    thumbnail = render.render_thumbnail(image.data, overlay)
    return _Variant(masks=masks, centres=centres, overlay=overlay, thumbnail=thumbnail)


def _png(im: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _prompts(
    rng: random.Random, variant: _Variant, width: int, height: int, points: bool, boxes: bool
) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    objects = list(range(min(len(variant.masks), rng.choice([1, 1, 1, 2, 3]))))
    grouped = len(objects) > 1 and points and boxes
    point_prompts: list[dict[str, int]] = []
    box_prompts: list[dict[str, int]] = []
    for j in objects:
        oid = {"object_id": j} if grouped else {}
        if points:
            x, y = variant.centres[j]
            point_prompts.append({"x": x, "y": y, "label": 1, **oid})
            if rng.random() < 0.2:  # an exclude point to carve something out
                point_prompts.append(
                    {"x": rng.randrange(width), "y": rng.randrange(height), "label": 0, **oid}
                )
        if boxes:
            x0, y0, x1, y1 = variant.masks[j].bbox  # type: ignore[misc]
            pad_x, pad_y = round((x1 - x0) * 0.04), round((y1 - y0) * 0.04)
            box_prompts.append(
                {
                    "x_min": max(0, x0 - pad_x),
                    "y_min": max(0, y0 - pad_y),
                    "x_max": min(width, x1 + pad_x),
                    "y_max": min(height, y1 + pad_y),
                    **oid,
                }
            )
    return point_prompts, box_prompts


def _make_run(
    rng: random.Random,
    report: SeedReport,
    image: _Image,
    owner: Any,
    parent: Run | None,
    created: dt.datetime,
    now: dt.datetime,
    files: _Files,
) -> tuple[Run, list[Mask]]:
    S = Run.Status
    row = image.row
    status = _status(rng, now - created)
    report.statuses[status] = report.statuses.get(status, 0) + 1
    if parent is not None:
        text, points, boxes = (
            bool(parent.prompt_text),
            bool(parent.point_count),
            bool(parent.box_count),
        )
    else:
        text, points, boxes = _kind(rng)
    variant = _variant(rng, image, report, need=points or boxes)
    point_prompts, box_prompts = _prompts(rng, variant, row.width, row.height, points, boxes)
    if parent is not None and text and rng.random() < 0.7:
        prompt = parent.prompt_text
    else:
        prompt = rng.choice(image.concepts) if text else ""
    multiple = len(variant.masks) > 1 or rng.random() < 0.2
    run_input: dict[str, Any] = {
        "prompt": prompt,
        "apply_mask": rng.random() < 0.8,
        "return_multiple_masks": multiple,
        "max_masks": max(len(variant.masks), rng.choice([3, 3, 5, 8, 10])) if multiple else 3,
        "include_scores": rng.random() < 0.75,
        "include_boxes": rng.random() < 0.6,
        "sync_mode": rng.random() < 0.05,
        "output_format": rng.choices(["png", "webp", "jpeg"], [85, 10, 5])[0],
    }
    if point_prompts:
        run_input["point_prompts"] = point_prompts
    if box_prompts:
        run_input["box_prompts"] = box_prompts

    run = Run(
        id=_uuid(rng),
        owner=owner,
        image=row,
        parent=parent,
        input=run_input,
        metadata=rng.choice(METADATA) if rng.random() < 0.1 else None,
        status=status,
        created_at=created,
        updated_at=created,
    )
    run.derive_columns()  # what save() would do; bulk_create does not call save()
    inline = f"data:{row.content_type};base64,… ({row.byte_size} bytes, sha256 {row.sha256})"
    run.request_body = build_create_body(
        input={"image_url": inline, **run_input}, client_ref=str(run.id), metadata=run.metadata
    )
    run.image_delivery = "inline"
    run.submit_attempts = 1
    sending = created + dt.timedelta(milliseconds=rng.randint(40, 900))

    if status == S.NOT_SUBMITTED:
        http, code, message = rng.choice(REFUSALS)
        run.error_http_status, run.error_code, run.error_message = http, code, message
        run.error_details = {"errors": None, "fields": {}}
        run.updated_at = sending
        return run, []

    submitted = sending + dt.timedelta(milliseconds=rng.randint(150, 1200))
    run.submitted_at = submitted
    run.provider_run_id = str(_uuid(rng))
    run.provider_response = {
        "id": run.provider_run_id,
        "status_code": "queued",
        "client_ref": str(run.id),
        "created_at": submitted.isoformat(),
    }
    run.poll_deadline_at = submitted + dt.timedelta(seconds=settings.SAM3WEB_POLL_DEADLINE)
    run.updated_at = submitted
    if status in (S.QUEUED, S.RUNNING, S.STALE):
        run.provider_status = "running" if status != S.QUEUED else "queued"
        if status != S.QUEUED:
            rng.randint(100, 3000)  # when it started running: not kept, drawn for the same stream
        if status == S.STALE:
            run.poll_attempts = 70
            run.updated_at = run.poll_deadline_at
        return run, []

    started = submitted + dt.timedelta(milliseconds=rng.randint(80, 2500))
    megapixels = row.width * row.height / 1e6
    if status == S.SUCCEEDED:
        base = 700 + 260 * megapixels + 45 * len(variant.masks)
        duration = base * rng.lognormvariate(0, 0.3)
        if rng.random() < 0.03:  # a cold start
            duration += rng.uniform(4000, 20000)
    else:
        duration = rng.uniform(200, 4000)
    run.duration_ms = round(duration)
    run.completed_at = started + dt.timedelta(milliseconds=run.duration_ms)
    run.result_source = "callback" if rng.random() < 0.7 else "poll"
    run.updated_at = run.completed_at + dt.timedelta(milliseconds=rng.randint(30, 2500))
    run.provider_status = "cancelled" if status == S.CANCELED else str(status)

    if status != S.SUCCEEDED:
        # Runflow reports "0" for runs it does not bill; sometimes that figure never arrives.
        run.cost = Decimal("0") if rng.random() < 0.7 else None
        if status == S.FAILED:
            run.failure_code, run.failure_stage, run.failure_message = rng.choice(FAILURES)
        return run, []

    # Succeeded: Runflow's cost, except for a few runs whose figure has not come yet.
    run.cost = settings.SAM3WEB_PRICE_PER_IMAGE if rng.random() < 0.94 else None
    return run, _succeed(rng, run, image, variant, files)


def _succeed(
    rng: random.Random, run: Run, image: _Image, variant: _Variant, files: _Files
) -> list[Mask]:
    row = image.row
    folder = f"{run.created_at:%Y/%m}"
    base = f"https://files.runflow.io/runs/{run.provider_run_id}"
    sync = run.input["sync_mode"]
    scores = sorted((round(rng.uniform(0.3, 0.99), 4) for _ in variant.masks), reverse=True)
    key = id(variant)
    # The variant's files when runs share them: named by the image's content and the variant.
    shared_as = f"{row.sha256[:16]}-{image.variants.index(variant)}"
    masks: list[Mask] = []
    out_masks: list[dict[str, Any]] = []
    for index, mask in enumerate(variant.masks):
        url = (
            "data:image/png;base64,… (left out by seed_runs)"
            if sync
            else f"{base}/mask-{index}.png?X-Amz-Expires=259200"
        )
        out_masks.append(
            {
                "url": url,
                "content_type": "image/png",
                "file_name": f"mask-{index}.png",
                "width": row.width,
                "height": row.height,
            }
        )
        if files.shared:
            name = f"masks/seed/{shared_as}-{index}.png"
            files.write_shared(name, mask.png)
        else:
            name = f"masks/{folder}/{run.id}-{index}.png"
            files.write(name, mask.png, (key, f"mask{index}"))
        assert mask.bbox is not None  # variants keep only masks with pixels
        x0, y0, x1, y1 = mask.bbox
        masks.append(
            Mask(
                run=run,
                index=index,
                file=name,
                score=scores[index] if run.input["include_scores"] else None,
                x_min=x0,
                y_min=y0,
                x_max=x1,
                y_max=y1,
                area=mask.area,
                copied_at=run.updated_at,
            )
        )
    for attr, ext, data in (
        ("overlay", "png", variant.overlay),
        ("thumbnail", "jpg", variant.thumbnail),
    ):
        where = "overlays" if attr == "overlay" else "thumbs"
        if files.shared:
            name = f"{where}/seed/{shared_as}.{ext}"
            files.write_shared(name, data)
        else:
            name = f"{where}/{folder}/{run.id}.{ext}"
            files.write(name, data, (key, attr))
        setattr(run, attr, name)
    model_data: dict[str, Any] = {"masks": out_masks}
    if run.input["include_scores"]:
        model_data["scores"] = scores
    if run.input["include_boxes"]:
        model_data["boxes"] = [
            [
                round((x0 + x1) / 2 / row.width, 4),
                round((y0 + y1) / 2 / row.height, 4),
                round((x1 - x0) / row.width, 4),
                round((y1 - y0) / row.height, 4),
            ]
            for x0, y0, x1, y1 in (m.box for m in masks if m.box)
        ]
    model_data["prompt"] = run.prompt_text
    run.output = {"model_data": model_data, "nsfw_detected": False}
    run.artifacts = Run.Artifacts.DONE
    run.mask_count = len(masks)
    return masks
