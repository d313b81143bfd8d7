"""The upload handler for large uploads of many files, through real multipart requests from a
signed-in browser that must pass the CSRF check, to a view of this module's own (its
urlpatterns serve as the URLconf)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from segmentation.imaging.decode import size_text
from segmentation.imaging.uploads import LimitedDiskUploadHandler

KiB = 1024
MiB = 1024 * KiB
TOKEN = "uploads0test0csrf0secret01234567"  # an unmasked CSRF secret: 32 letters and digits


@csrf_exempt  # CsrfViewMiddleware would read the body before the handler is in place...
def receive(request: HttpRequest) -> JsonResponse:
    limit = int(request.GET["limit"])
    request.upload_handlers = [LimitedDiskUploadHandler(request, max_total_bytes=limit)]
    return csrf_protect(report)(request)  # ...so the check comes after installing it


def report(request: HttpRequest) -> JsonResponse:
    """What the view sees, and what lies in the temporary folder at that moment."""
    files = []
    for upload in request.FILES.getlist("images"):
        assert isinstance(upload, TemporaryUploadedFile)  # never an InMemoryUploadedFile
        on_disk = Path(upload.temporary_file_path())
        files.append(
            {
                "name": upload.name,
                "size": upload.size,
                "path": str(on_disk),
                "bytes_on_disk": on_disk.stat().st_size,
                "sha256": hashlib.sha256(upload.read()).hexdigest(),
            }
        )
    return JsonResponse(
        {
            "files": files,
            "fields": {k: v for k, v in request.POST.items() if k != "csrfmiddlewaretoken"},
            "refused": request.upload_refused,  # type: ignore[attr-defined]
            "temp_dir": sorted(os.listdir(request.GET["temp_dir"])),
        }
    )


# The app's own pages too: the CSRF failure page links to them.
urlpatterns = [path("receive/", receive), path("", include("sam3web.urls"))]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.fixture
def temp_dir(settings: Any, tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    return folder


@pytest.fixture
def browser(owner: Any) -> Client:
    """A signed-in browser whose POSTs must carry the CSRF token, as real ones must."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    client.cookies["csrftoken"] = TOKEN
    return client


def send(client: Client, temp_dir: Path, limit: int, files: dict[str, bytes], **fields: str) -> Any:
    """A multipart POST in a form's order: the CSRF token and fields first, then the files."""
    response = client.post(
        f"/receive/?limit={limit}&temp_dir={temp_dir}",
        {
            "csrfmiddlewaretoken": TOKEN,
            **fields,
            "images": [SimpleUploadedFile(name, data) for name, data in files.items()],
        },
    )
    assert response.status_code == 200, response.content[:500]
    return response.json()


def test_every_file_even_a_tiny_one_goes_to_a_temporary_file_on_disk(
    browser: Client, temp_dir: Path
) -> None:
    files = {"tiny.jpg": b"\xff\xd8\xff tiny", "big.png": os.urandom(3 * MiB)}
    seen = send(browser, temp_dir, 10 * MiB, files, note="holiday")
    assert (seen["refused"], seen["fields"]) == ("", {"note": "holiday"})
    assert [(f["name"], f["size"], f["bytes_on_disk"]) for f in seen["files"]] == [
        ("tiny.jpg", len(files["tiny.jpg"]), len(files["tiny.jpg"])),
        ("big.png", 3 * MiB, 3 * MiB),
    ]
    assert [f["sha256"] for f in seen["files"]] == [
        hashlib.sha256(data).hexdigest() for data in files.values()
    ]
    # Both lay in the temporary folder while the view ran, and went with the request.
    assert sorted(Path(f["path"]).name for f in seen["files"]) == seen["temp_dir"]
    assert os.listdir(temp_dir) == []


def test_an_upload_exactly_at_the_limit_is_taken_whole(browser: Client, temp_dir: Path) -> None:
    files = {"a.jpg": os.urandom(300 * KiB), "b.jpg": os.urandom(200 * KiB)}
    seen = send(browser, temp_dir, 500 * KiB, files)
    assert seen["refused"] == ""
    assert [f["size"] for f in seen["files"]] == [300 * KiB, 200 * KiB]


def test_past_the_limit_the_view_sees_no_files_and_the_reason(
    browser: Client, temp_dir: Path
) -> None:
    # The first file fits and is complete before the second passes the limit: it goes too.
    files = {"a.jpg": os.urandom(300 * KiB), "b.jpg": os.urandom(200 * KiB + 1)}
    seen = send(browser, temp_dir, 500 * KiB, files, title="Kept: it came first")
    assert seen["files"] == []
    assert seen["refused"] == (
        "The upload is larger than the 0.5 MiB limit, so none of its files were kept."
    )
    assert seen["fields"] == {"title": "Kept: it came first"}
    assert seen["temp_dir"] == []  # nothing on disk, not even the first file
    assert os.listdir(temp_dir) == []


def test_one_huge_file_is_stopped_without_filling_the_disk(browser: Client, temp_dir: Path) -> None:
    seen = send(browser, temp_dir, MiB, {"huge.tif": bytes(8 * MiB)})
    assert (seen["files"], seen["temp_dir"]) == ([], [])
    assert seen["refused"].startswith("The upload is larger than the 1 MiB limit")


def test_the_csrf_check_still_applies_after_installing_the_handler(
    browser: Client, temp_dir: Path
) -> None:
    response = browser.post(
        f"/receive/?limit={MiB}&temp_dir={temp_dir}",
        {"images": [SimpleUploadedFile("a.jpg", b"\xff\xd8\xff")]},
    )
    assert response.status_code == 403
    assert os.listdir(temp_dir) == []


def test_a_request_without_files_reads_as_no_refusal() -> None:
    request = HttpRequest()
    LimitedDiskUploadHandler(request, max_total_bytes=1)
    assert request.upload_refused == ""  # type: ignore[attr-defined]


def test_the_batch_upload_limit_is_4_gib_unless_set(settings: Any) -> None:
    assert settings.SAM3WEB_BATCH_MAX_UPLOAD_BYTES == 4 * 1024**3
    assert size_text(settings.SAM3WEB_BATCH_MAX_UPLOAD_BYTES) == "4 GiB"
    assert size_text(2 * 1024**3) == "2 GiB" and size_text(1536 * MiB) == "1.5 GiB"
