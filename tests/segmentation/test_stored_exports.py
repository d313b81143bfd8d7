"""Exports with media in a bucket (moto's server, over a real socket): a run's and a batch's
downloads are written to the bucket under exports/ and the browser is redirected to a signed
link that downloads them under their own name; access is checked first; a bad query writes
nothing; deleting the run removes its exports, prune removes old ones; a bucket that cannot be
reached is a 503 with the reason."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import zipfile
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from PIL import Image

from segmentation import exports, runs, stored_exports
from segmentation.models import Run
from segmentation.prune import prune
from tests.factories import add_masks, answered_batch, ellipse, image_bytes, make_run

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

BOXES = [(20, 20, 121, 151), (200, 40, 301, 201)]


def finished_run(owner) -> Run:
    """A run on cat.jpg (451×300) with two masks, its files in the bucket."""
    run = make_run(owner, artifacts=Run.Artifacts.DONE)
    add_masks(
        run, [(ellipse((x0, y0, x1 - 1, y1 - 1)), (x0, y0, x1, y1)) for x0, y0, x1, y1 in BOXES]
    )
    return Run.objects.select_related("image").get(pk=run.pk)


def export_keys(server, bucket: str) -> list[str]:
    return [k for k in server.keys(bucket) if k.startswith("exports/")]


def downloaded(response) -> httpx.Response:
    """The signed link the app redirected to, fetched as a browser would (no cookies)."""
    assert response.status_code == 302, (response.status_code, response.content[:300])
    assert response["Cache-Control"] == "private, no-store"
    link = urlsplit(response["Location"])
    endpoint = settings.STORAGES["default"]["OPTIONS"]["endpoint_url"]  # type: ignore[index]
    assert link.netloc == urlsplit(endpoint).netloc
    assert f"X-Amz-Expires={settings.SAM3WEB_S3_URL_TTL}" in link.query
    fetched = httpx.get(response["Location"])
    assert fetched.status_code == 200, fetched.text[:300]
    return fetched


def attachment_name(fetched: httpx.Response) -> str:
    disposition = fetched.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    return disposition.split("filename=", 1)[1].strip('"')


def test_a_runs_exports_are_written_to_the_bucket_and_downloaded_from_there(
    signed_in: Client, owner, object_storage
) -> None:
    server, bucket = object_storage
    run = finished_run(owner)
    expected_type = {
        "masks.zip": "application/zip",
        "json": "application/json; charset=utf-8",
        "coco": "application/json; charset=utf-8",
        "composite.png": "image/png",
    }
    bodies = {}
    for fmt, content_type in expected_type.items():
        fetched = downloaded(signed_in.get(f"/runs/{run.pk}/export/{fmt}"))
        assert fetched.headers["content-type"] == content_type
        extension = {"masks.zip": "zip", "coco": "coco.json", "composite.png": "png"}.get(fmt, fmt)
        assert attachment_name(fetched) == exports.download_name(run, extension)
        bodies[fmt] = fetched.content

    with zipfile.ZipFile(io.BytesIO(bodies["masks.zip"])) as archive:
        pngs = [n for n in archive.namelist() if n.endswith(".png")]
        assert len(pngs) == 2
        for name in pngs:
            assert Image.open(io.BytesIO(archive.read(name))).size == (451, 300)
    data = json.loads(bodies["json"])
    assert [i["number"] for i in data["instances"]] == [1, 2]
    coco = json.loads(bodies["coco"])
    assert sorted(a["bbox"] for a in coco["annotations"]) == [
        [x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in BOXES
    ]
    assert Image.open(io.BytesIO(bodies["composite.png"])).size == (451, 300)

    # One object per download, under the run's folder, named by nothing a teammate typed.
    keys = export_keys(server, bucket)
    assert len(keys) == 4
    assert all(k.startswith(f"exports/runs/{run.pk}/") for k in keys)


def test_access_and_the_query_are_checked_before_anything_is_written(
    signed_in: Client, stranger: Client, owner, object_storage
) -> None:
    server, bucket = object_storage
    run = finished_run(owner)
    refused = stranger.get(f"/runs/{run.pk}/export/json")
    assert refused.status_code == 302 and refused["Location"].startswith("/accounts/login")
    bad = signed_in.get(f"/runs/{run.pk}/export/json?threshold=2")
    assert bad.status_code == 400 and "threshold" in bad.content.decode()
    assert signed_in.get(f"/runs/{run.pk}/export/tiff").status_code == 404
    assert export_keys(server, bucket) == []


def test_a_share_links_exports_come_from_the_bucket_and_name_no_one(
    signed_in: Client, stranger: Client, owner, object_storage
) -> None:
    server, bucket = object_storage
    run = finished_run(owner)
    signed_in.post(f"/runs/{run.pk}/share/")
    token = Run.objects.get(pk=run.pk).share_token
    response = stranger.get(f"/s/{token}/export/json")
    fetched = downloaded(response)
    assert attachment_name(fetched) == "cat-shared.json"
    data = json.loads(fetched.content)
    assert data["run"]["url"].endswith(f"/s/{token}/")
    assert owner.username not in fetched.text
    assert [k.split("/")[2] for k in export_keys(server, bucket)] == [str(run.pk)]


def test_deleting_a_run_deletes_its_exports(signed_in: Client, owner, object_storage) -> None:
    server, bucket = object_storage
    run = finished_run(owner)
    other = finished_run(owner)
    for r in (run, other):
        downloaded(signed_in.get(f"/runs/{r.pk}/export/masks.zip"))
    assert runs.delete_run(run.pk)
    assert [k.split("/")[2] for k in export_keys(server, bucket)] == [str(other.pk)]


def test_prune_removes_exports_once_no_link_can_reach_them(
    signed_in: Client, owner, object_storage
) -> None:
    server, bucket = object_storage
    run = finished_run(owner)
    downloaded(signed_in.get(f"/runs/{run.pk}/export/coco"))
    assert prune(apply=True).old_exports.count == 0  # just made: its link is alive
    later = timezone.now() + stored_exports.EXPORTS_KEPT + dt.timedelta(minutes=1)
    found = prune(now=later).old_exports
    assert found.count == 1 and found.bytes > 0
    assert len(export_keys(server, bucket)) == 1  # a dry run removes nothing
    assert prune(apply=True, now=later).old_exports.count == 1
    assert export_keys(server, bucket) == []
    # The run's own files are named by rows: prune leaves them.
    assert run.image.file.name in server.keys(bucket)


def test_a_batchs_dataset_is_uploaded_as_it_is_built_and_downloaded_from_the_bucket(
    signed_in: Client, owner, object_storage
) -> None:
    server, bucket = object_storage
    batch = answered_batch(owner)
    fetched = downloaded(signed_in.get(f"/batches/{batch.pk}/export/coco.json"))
    assert attachment_name(fetched) == "cats-2026.coco.json"
    assert fetched.headers["content-type"] == "application/json; charset=utf-8"
    coco = json.loads(fetched.content)
    assert sorted(i["file_name"] for i in coco["images"]) == ["0001-cat.jpg", "0002-coffee.jpg"]
    assert [a["bbox"] for a in coco["annotations"]] == [[10, 10, 91, 71]] * 2

    # With the images: a ZIP holding them byte for byte.
    fetched = downloaded(signed_in.get(f"/batches/{batch.pk}/export/yolo.zip?images=1"))
    assert attachment_name(fetched) == "cats-2026.yolo.zip"
    with zipfile.ZipFile(io.BytesIO(fetched.content)) as archive:
        images = {
            n.rsplit("/", 1)[-1]: archive.read(n) for n in archive.namelist() if "images/" in n
        }
    assert images["0001-cat.jpg"] == image_bytes("cat.jpg")
    assert images["0002-coffee.jpg"] == image_bytes("coffee.jpg")
    keys = export_keys(server, bucket)
    assert len(keys) == 2 and all(k.startswith(f"exports/batches/{batch.pk}/") for k in keys)


def test_a_large_export_goes_up_in_parts_and_comes_back_whole(object_storage) -> None:
    """Past boto3's multipart threshold (8 MiB), from a generator as a dataset is built."""
    server, bucket = object_storage
    pieces = [hashlib.sha256(str(i).encode()).digest() * 2048 for i in range(400)]  # 25 MiB
    response = stored_exports.keep(
        "batches",
        7,
        filename="big.coco.zip",
        content_type="application/zip",
        content=stored_exports.chunks_file(pieces),
        log="batch=7",
    )
    fetched = httpx.get(response["Location"])
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).digest() == hashlib.sha256(b"".join(pieces)).digest()
    assert attachment_name(fetched) == "big.coco.zip"
    [key] = export_keys(server, bucket)
    assert key.startswith("exports/batches/7/") and key.endswith(".coco.zip")


def test_while_the_bucket_is_unreachable_exports_say_so(
    signed_in: Client, owner, object_storage
) -> None:
    server, bucket = object_storage
    run = finished_run(owner)
    batch = answered_batch(owner)
    server.stop()
    try:
        for url in (
            f"/runs/{run.pk}/export/masks.zip",
            f"/runs/{run.pk}/export/json",
            f"/batches/{batch.pk}/export/coco.json",
            f"/batches/{batch.pk}/export/yolo.zip",
        ):
            response = signed_in.get(url)
            assert response.status_code == 503, (url, response.status_code)
            assert response["Retry-After"] == "60"
            assert "file storage cannot be reached" in response.content.decode()
    finally:
        server.start()
    assert export_keys(server, bucket) == []
    downloaded(signed_in.get(f"/runs/{run.pk}/export/json"))  # and once it is back, it works


def test_a_mask_gone_from_the_bucket_is_left_out_and_its_crop_is_a_404(
    signed_in: Client, owner, object_storage
) -> None:
    server, bucket = object_storage
    batch = answered_batch(owner)
    first = batch.made_runs.order_by("created_at").first()
    assert first is not None
    gone = first.masks.get()
    server.client().delete_object(Bucket=bucket, Key=gone.file.name)
    fetched = downloaded(signed_in.get(f"/batches/{batch.pk}/export/coco.json"))
    coco = json.loads(fetched.content)
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 1
    assert signed_in.get(f"/runs/{first.pk}/masks/1.crop.png").status_code == 404
    other = batch.made_runs.exclude(pk=first.pk).get()
    crop = signed_in.get(f"/runs/{other.pk}/masks/1.crop.png")
    assert crop.status_code == 200 and crop["Content-Type"] == "image/png"
