"""Things the tests make: image bytes and uploads, stored images, runs (with real mask files
when asked), and a turn of the real database worker. Built through the app's own code (intake,
storage), never by writing rows the app could not have written."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from html import unescape
from typing import Any

import httpx
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from PIL import Image, ImageDraw

from segmentation import schema
from segmentation.imaging.intake import intake_bytes
from segmentation.imaging.store import store_image
from segmentation.models import Batch, BatchItem, BatchRun, Mask, Run, SourceImage
from tests.sample_images import IMAGES, ROOT

# Two coins on coins.png (384×303), each a box prompt: the stand-in fills the ellipse inscribed
# in each box, scored 0.95 and 0.91.
COINS_BOXES = [
    {"x_min": 20, "y_min": 30, "x_max": 150, "y_max": 140},
    {"x_min": 200, "y_min": 120, "x_max": 360, "y_max": 280},
]
# The options as the run form starts with them.
OPTIONS = {option.name: option.initial for option in schema.OPTIONS}
# The stand-in's keys: one with credit, one without.
TEST_KEY = "test-key"
BROKE_KEY = "broke-key"


def image_bytes(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def upload(name: str, data: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes(name) if data is None else data)


def png_bytes(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def stored_image(
    name: str = "cat.jpg", *, user: Any = None, data: bytes | None = None
) -> SourceImage:
    """A test image taken in and stored as an upload of it would be."""
    taken = intake_bytes(image_bytes(name) if data is None else data)
    return store_image(taken, original_name=name)


def make_run(
    owner: Any,
    *,
    image: str | SourceImage = "cat.jpg",
    input: dict[str, Any] | None = None,
    status: str = Run.Status.SUCCEEDED,
    **fields: Any,
) -> Run:
    """A run row on a test image (``input`` defaults to the text prompt "cat")."""
    source = image if isinstance(image, SourceImage) else stored_image(image)
    return Run.objects.create(
        owner=owner,
        image=source,
        input={"prompt": "cat"} if input is None else input,
        status=status,
        **fields,
    )


def prompted_run(
    owner: Any,
    *,
    prompt: str = "cat",
    points: list[dict[str, int]] | None = None,
    boxes: list[dict[str, int]] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Run:
    """A finished run on cat.jpg (451×300) with these prompts, as the new-run form would have
    stored it (finished: a pending one would be picked up by a worker a browser test runs)."""
    data: dict[str, Any] = {"prompt": prompt, **OPTIONS}
    if points:
        data["point_prompts"] = points
    if boxes:
        data["box_prompts"] = boxes
    return make_run(owner, input=data, metadata=metadata)


def encode_image(im: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def decode_image(data: bytes) -> Image.Image:
    """Bytes decoded whole (a truncated file fails here, not later)."""
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def mask_ellipse(
    size: tuple[int, int], box: tuple[int, int, int, int], mode: str = "L"
) -> Image.Image:
    """A white ellipse on black (or an opaque ellipse on transparent for RGBA/LA)."""
    if mode in ("RGBA", "LA"):
        im = Image.new(mode, size, (255, 255, 255, 0) if mode == "RGBA" else (255, 0))
        ImageDraw.Draw(im).ellipse(box, fill=(255, 255, 255, 255) if mode == "RGBA" else (255, 255))
        return im
    im = Image.new("L", size, 0)
    ImageDraw.Draw(im).ellipse(box, fill=255)
    return im.convert(mode) if mode != "L" else im


def colour_at(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The bands of a multi-band image's (RGB, RGBA, ...) pixel at ``xy``: Pillow's getpixel()
    answers a number for one band and None for none, so the test says which it expects."""
    value = im.getpixel(xy)
    assert isinstance(value, tuple), f"a {im.mode} image has no multi-band pixels: {value!r}"
    return value


def ellipse(box: tuple[int, int, int, int], size: tuple[int, int] = (451, 300)) -> Image.Image:
    """A 1-bit mask of the ellipse inscribed in ``box`` (Pillow's corners, both inclusive)."""
    im = Image.new("1", size, 0)
    ImageDraw.Draw(im).ellipse(box, fill=255)
    return im


def finished_run(
    owner: Any,
    *,
    image: str = "cat.jpg",
    masks: int = 2,
    metadata: dict[str, Any] | None = None,
    status: str = Run.Status.SUCCEEDED,
    **input: Any,
) -> Run:
    """A finished run on a test photo with ``masks`` real mask PNGs: ellipses side by side
    and apart, so instance n's centre shows instance n's colour. ``input`` overrides the text
    prompt "cat" and the form's options."""
    run = make_run(
        owner,
        image=image,
        input={"prompt": "cat", "point_prompts": [], "box_prompts": [], **OPTIONS, **input},
        status=status,
        metadata=metadata,
        artifacts=Run.Artifacts.DONE if masks else Run.Artifacts.NONE,
    )
    w, h = run.image.width, run.image.height
    shapes = []
    for index in range(masks):
        x = 10 + index * (w // 4)
        box = (x, 10, x + w // 5, 10 + h // 2)
        shapes.append((ellipse((box[0], box[1], box[2] - 1, box[3] - 1), (w, h)), box))
    add_masks(run, shapes)
    return run


def run_with_masks(
    owner: Any, masks: Iterable[tuple[Image.Image | None, tuple[int, int, int, int] | None]]
) -> Run:
    """A finished run on cat.jpg (451×300) whose masks are the given images and boxes (None:
    a mask that could not be copied)."""
    run = make_run(
        owner,
        input={"prompt": "cat", "point_prompts": [{"x": 10, "y": 20, "label": 1}]},
        artifacts=Run.Artifacts.DONE,
    )
    add_masks(run, masks)
    return run


def add_masks(
    run: Run,
    masks: Iterable[tuple[Image.Image | None, tuple[int, int, int, int] | None]],
    *,
    score: Any = None,
) -> list[Mask]:
    """Mask rows with real PNG files, as the copy task leaves them: for each (image, box), a
    stored mask (or, for None, one that could not be copied). Scores 0.9, 0.8, ... unless
    ``score(index)`` says otherwise."""
    rows = []
    for index, (im, box) in enumerate(masks):
        row = Mask(run=run, index=index, score=score(index) if score else 0.9 - index / 10)
        if box is not None:
            row.x_min, row.y_min, row.x_max, row.y_max = box
        if im is None:
            row.error = "Runflow's link for this mask has expired."
        else:
            buf = io.BytesIO()
            im.save(buf, "PNG")
            row.file.save(f"{run.pk}-{index}.png", ContentFile(buf.getvalue()), save=False)
            row.area = im.histogram()[255]
            row.copied_at = timezone.now()
        row.save()
        rows.append(row)
    Run.objects.filter(pk=run.pk).update(mask_count=len(rows))
    return rows


def answered_batch(owner: Any, names: Iterable[str] = ("cat.jpg", "coffee.jpg")) -> Batch:
    """A running batch "Cats, 2026" of these images with the concept "cat", each image answered
    by a finished run of one mask: the ellipse in (10, 10)-(101, 81)."""
    names = list(names)
    batch = Batch.objects.create(
        owner=owner,
        name="Cats, 2026",
        concepts=["cat"],
        state=Batch.State.RUNNING,
        intake_total=len(names),
        intake_done=len(names),
        started_at=timezone.now(),
    )
    for position, name in enumerate(names):
        image = stored_image(name)
        item = BatchItem.objects.create(
            batch=batch,
            position=position,
            name=f"photos/{name}",
            image=image,
            state=BatchItem.State.ACCEPTED,
        )
        run = make_run(owner, image=image, batch=batch, artifacts=Run.Artifacts.DONE)
        add_masks(
            run, [(ellipse((10, 10, 100, 80), (image.width, image.height)), (10, 10, 101, 81))]
        )
        BatchRun.objects.create(batch=batch, item=item, concept="cat", run=run)
    return batch


def run_worker() -> None:
    """Run the real database worker until the queue is empty."""
    call_command("db_worker", "--batch", "--no-startup-delay", "--interval", "0")


def database_url() -> str:
    """A DATABASE_URL naming this test's database (SQLite's file, or PostgreSQL's test
    database), for the processes a test starts."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    # dj-database-url puts a socket folder given as ?host= in OPTIONS, not HOST.
    host = db["HOST"] or db["OPTIONS"].get("host", "")
    where = (
        f"@/{db['NAME']}?host={host}"
        if host.startswith("/")
        else f"@{host}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}{where}"


def worker_env(standin: Any, **extra: str) -> dict[str, str]:
    """The environment of a worker process (or the app under gunicorn) that shares this test's
    database and media folder and talks to the stand-in."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "RUNFLOW_BASE_URL": standin.base_url,
        "RUNFLOW_API_KEY": TEST_KEY,
        "RUNFLOW_BACKOFF_BASE": "0.01",
        "SAM3WEB_SUBMIT_LEASE": "1",
        "SAM3WEB_STATIC_MANIFEST": "0",
        **_storage_env(),
    }
    env.update(extra)
    return env


def _storage_env() -> dict[str, str]:
    """The AWS_* variables of this test's bucket (the object_storage fixture), or none at all:
    a worker must store where the test's own process does."""
    default: dict[str, Any] = settings.STORAGES["default"]
    options: dict[str, Any] = default.get("OPTIONS", {})
    if default["BACKEND"] != "storages.backends.s3.S3Storage":
        return {"AWS_STORAGE_BUCKET_NAME": ""}
    return {
        "AWS_STORAGE_BUCKET_NAME": options["bucket_name"],
        "AWS_S3_ENDPOINT_URL": options["endpoint_url"] or "",
        "AWS_ACCESS_KEY_ID": options["access_key"] or "",
        "AWS_SECRET_ACCESS_KEY": options["secret_key"] or "",
        "AWS_S3_REGION_NAME": options["region_name"] or "",
    }


def worker_until_idle(standin: Any, **extra: str) -> subprocess.CompletedProcess[str]:
    """The worker as bin/serve starts it, in a process of its own (a restart after a crash),
    until the queue is empty."""
    done = subprocess.run(
        [sys.executable, "manage.py", "worker", "--", "--batch", "--no-startup-delay"],
        cwd=ROOT,
        env=worker_env(standin, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


def start_gunicorn(
    env: dict[str, str], *, workers: int, threads: int, ready_path: str
) -> tuple[subprocess.Popen[bytes], str]:
    """The app under gunicorn on a free local port, with ``env``, once it answers at
    ``ready_path``: the process (the caller stops it) and its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "sam3web.wsgi", "-b", f"127.0.0.1:{port}",
         "-w", str(workers), "-k", "gthread", "--threads", str(threads)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url + ready_path)
    return proc, url


def wait_until_serving(url: str, timeout: float = 30.0) -> None:
    """Until a server process just started answers HTTP at ``url`` (any status will do)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=5)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


# --- through the app's own views and worker ---------------------------------------------------


def form_data(**overrides: Any) -> dict[str, Any]:
    """The new-run form as a person fills it in: cat.jpg, the text prompt "cat", the form's
    options; ``None`` leaves a field out."""
    data: dict[str, Any] = {
        "prompt": "cat",
        "point_prompts": "",
        "box_prompts": "",
        "include_scores": "on",
        "include_boxes": "on",
        "apply_mask": "on",
        "max_masks": "3",
        "output_format": "png",
        "metadata": "",
    }
    if "image" not in overrides and "image_url" not in overrides:
        data["image"] = upload("cat.jpg")
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def submit(client: Client, **overrides: Any) -> Run:
    """A run made through the new-run form (not sent yet: that is the worker's job)."""
    response = client.post("/runs/new/", form_data(**overrides))
    assert response.status_code == 302, response.content.decode()[:2000]
    return Run.objects.get(pk=response["Location"].split("/")[2])


def field_errors(response: Any, field: str) -> list[str]:
    """The messages rendered beside one field, as a person reads them."""
    html = response.content.decode()
    block = re.search(rf'id="field-{field}".*?</div>', html, re.S)
    assert block, f"no field {field} on the page"
    return [unescape(m) for m in re.findall(r"<li>(.*?)</li>", block.group(0), re.S)]


def drain(until: Callable[[], bool], timeout: float = 20.0) -> None:
    """Run the real worker until ``until()`` holds (polls are scheduled a little ahead)."""
    deadline = time.monotonic() + timeout
    while True:
        run_worker()
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError("the worker did not get there in time")
        time.sleep(0.05)


def settled(run: Run) -> Callable[[], bool]:
    return lambda: Run.objects.get(pk=run.pk).settled


def callback_payload(
    status: str = "succeeded",
    *,
    run_id: str = "3f9c2b1e-0000-4000-8000-000000000001",
    **changes: Any,
) -> dict[str, Any]:
    """A callback as Runflow sends it: these keys, in this order, `+00:00` times."""
    body: dict[str, Any] = {
        "event": {"succeeded": "run.completed", "failed": "run.failed"}.get(status, "run.x"),
        "run_id": run_id,
        "status": status,
        "output": {
            "model_data": {
                "masks": [{"url": "https://files.example/m0.png", "width": 451, "height": 300}],
                "scores": [0.93],
                "boxes": [[0.5, 0.5, 0.4, 0.6]],
            }
        }
        if status == "succeeded"
        else None,
        "duration_ms": 1834,
        "created_at": "2026-11-24T06:00:00.123456+00:00",
        "completed_at": "2026-11-24T06:00:01.957000+00:00",
        "metadata": {"project": "demo"},
    }
    body.update(changes)
    return body


def coins_run(
    client: Client, standin: Any, *, image: str = "coins.png", boxes: Any = None, **fields: Any
) -> Run:
    """A run made through the form (two box prompts on coins.png unless told otherwise), sent
    to the stand-in, finished and copied by the real worker."""
    standin.complete_after = 0.05
    form = {
        "image": upload(image),
        "prompt": "coins",
        "box_prompts": json.dumps(COINS_BOXES if boxes is None else boxes),
        "return_multiple_masks": "on",
        "max_masks": "4",
        **fields,
    }
    run = submit(client, **form)
    drain(settled(run), timeout=40)
    run = Run.objects.select_related("image", "owner").get(pk=run.pk)
    assert run.status == Run.Status.SUCCEEDED
    return run
