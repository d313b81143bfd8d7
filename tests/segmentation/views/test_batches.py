"""Batches' pages (/batches/...): through real POSTs of real files, the real database, the real
worker taking the images in and sending the runs to the Runflow stand-in, and what a person
reads on each page: the preview with its refusals and cost, Start pressed twice, Cancel and
Retry, who may press them, the list, the history filtered by batch, and every bad input the
form must refuse beside its field without a 500."""

from __future__ import annotations

import io
import re
import zipfile
from decimal import Decimal
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts import team
from segmentation import batches
from segmentation.models import Batch, BatchItem
from tests.factories import (
    OPTIONS,
    drain,
    field_errors,
    image_bytes,
    make_run,
    png_bytes,
    run_worker,
    upload,
    worker_until_idle,
)
from tests.image_server import ImageServer
from tests.sample_images import IMAGES

NEW = "/batches/new/"
# Tags inside a line of text: taken out without a space.
INLINE = r"</?(?:span|a|strong|em|code|time|i)\b[^>]*>"


# --- helpers ---------------------------------------------------------------------------------


def form(**overrides: Any) -> dict[str, Any]:
    """The new-batch form as a person fills it in: two concepts and the form's options;
    ``None`` leaves a field out."""
    data: dict[str, Any] = {
        "concepts": "cat\near",
        "return_multiple_masks": "on",
        "max_masks": "3",
        "include_scores": "on",
        "include_boxes": "on",
        "apply_mask": "on",
        "output_format": "png",
        "image_urls": "",
        "name": "",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def colours(n: int, start: int = 0) -> list[SimpleUploadedFile]:
    """``n`` different small PNGs."""
    return [
        SimpleUploadedFile(f"{i}.png", png_bytes(40 + i, 30, (i * 7 % 256, 90, 200)))
        for i in range(start, start + n)
    ]


def post_batch(client: Client, **overrides: Any) -> Batch:
    response = client.post(NEW, form(**overrides))
    assert response.status_code == 302, text(response)[:2000]
    return Batch.objects.get(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[-1]))


def text(response: Any) -> str:
    """The page as a person reads it: no tags, entities decoded, spaces collapsed."""
    html = response.content.decode()
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def section(response: Any, element_id: str) -> str:
    """The text of one part of the page (an element with this id, up to its section's end)."""
    html = response.content.decode()
    found = re.search(rf'id="{element_id}".*?</(section|ul|p|details)>', html, re.S)
    assert found, f"no #{element_id} on the page"
    inner = re.sub(INLINE, "", found.group(0).split(">", 1)[1])
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", inner)).split())


def page(client: Client, batch: Batch) -> Any:
    response = client.get(f"/batches/{batch.pk}/")
    assert response.status_code == 200
    return response


def taken_in(client: Client, **overrides: Any) -> Batch:
    """A batch made through the form, taken in by the real worker."""
    batch = post_batch(client, **overrides)
    run_worker()
    batch.refresh_from_db()
    assert batch.state == Batch.State.READY
    return batch


def finished(batch: Batch) -> bool:
    batch.refresh_from_db()
    return batches.progress(batch).complete


@pytest.fixture
def quick(standin: Any, fast_polling: None) -> Any:
    """The stand-in finishes each run 50 ms after it is made; the worker polls for it."""
    standin.complete_after = 0.05
    return standin


# --- the form --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_form_starts_with_the_run_forms_options_and_is_in_the_top_bar(signed_in) -> None:
    response = signed_in.get(NEW)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<a href="/batches/"' in html  # the top bar's "Batches"
    for name in ("images", "archive", "image_urls", "concepts", "run_again", "name"):
        assert f'name="{name}"' in html
    assert re.search(r'<input type="file" name="images"[^>]*multiple', html)
    assert 'accept="image/*"' in html
    checked = set(re.findall(r'<input type="checkbox" name="(\w+)"[^>]*checked', html))
    assert checked == {"apply_mask", "return_multiple_masks", "include_scores", "include_boxes"}
    assert re.search(r'name="max_masks" value="3"', html)
    assert "Run again anyway" in text(response)


@pytest.mark.django_db
def test_the_history_and_the_batches_list_lead_to_a_new_batch(signed_in) -> None:
    assert 'href="/batches/new/"' in signed_in.get("/runs/").content.decode()
    listed = signed_in.get("/batches/")
    assert listed.status_code == 200
    assert "No batches yet" in text(listed)
    assert 'href="/batches/new/"' in listed.content.decode()


@pytest.mark.django_db(transaction=True)
def test_files_and_a_url_are_taken_in_and_the_preview_says_what_was_refused_and_the_cost(
    signed_in: Client, owner, standin, settings
) -> None:
    settings.SAM3WEB_FETCH_ALLOW_PRIVATE = True
    with ImageServer() as server:
        url = server.url("/images/coffee.jpg")
        batch = post_batch(
            signed_in,
            images=[
                upload("cat.jpg"),
                SimpleUploadedFile("broken.jpg", (IMAGES / "bad" / "truncated.jpg").read_bytes()),
                SimpleUploadedFile("copy of cat.jpg", image_bytes("cat.jpg")),
            ],
            image_urls=f"\n  {url}  \n\n",
            name="Kitchen",
        )
        # Nothing is taken in while the request waits: the page follows intake instead.
        assert (batch.state, batch.intake_total, batch.intake_done) == (Batch.State.INTAKE, 4, 0)
        during = page(signed_in, batch)
        assert "Taking in the images" in text(during)
        assert "0 of 4 taken in (0%)" in text(during)
        assert f'hx-get="/batches/{batch.pk}/progress/?v=' in during.content.decode()
        assert signed_in.get(f"/batches/{batch.pk}/progress/").status_code == 200

        # The worker as bin/serve runs it, in a process of its own.
        worker_until_idle(standin, SAM3WEB_OUTBOUND_ALLOW="127.0.0.1")

    assert standin.create_calls() == []  # nothing is sent before Start
    response = page(signed_in, batch)
    assert "Kitchen" in text(response)
    assert "2 images accepted" in section(response, "accepted-title")
    assert "copy of cat.jpg: the same image as cat.jpg." in section(response, "duplicates-title")
    refused = section(response, "refused-title")
    assert refused.startswith("1 refused")
    assert "broken.jpg: This image file is damaged or incomplete" in refused
    assert "2 images × 2 concepts = 4 runs: 4 to send × $0.005 = $0.02" in section(
        response, "batch-cost"
    )
    assert "No monthly budget limits what ada spends." in text(response)
    assert re.search(
        r'<button type="submit" class="primary">Start</button>', response.content.decode()
    )
    # Thumbnails of what was accepted, by the existing image URL.
    for item in batch.items.filter(state=BatchItem.State.ACCEPTED):
        assert f'src="/images/{item.image_id}/thumb/"' in response.content.decode()

    # The live part stops asking once intake is done.
    done = signed_in.get(f"/batches/{batch.pk}/progress/")
    assert done.status_code == 286
    assert "Ready to start" in text(done)


@pytest.mark.django_db(transaction=True)
def test_start_pressed_twice_sends_one_run_per_image_and_concept_and_the_page_follows_them(
    signed_in: Client, owner, quick
) -> None:
    batch = taken_in(signed_in, images=colours(2))
    first = signed_in.post(f"/batches/{batch.pk}/start/", follow=True)
    again = signed_in.post(f"/batches/{batch.pk}/start/", follow=True)
    assert "Started: its runs are being made and sent to Runflow." in text(first)
    assert "This batch was already started: nothing was sent twice." in text(again)

    running = page(signed_in, batch)
    assert "Running" in section(running, "progress-title")
    assert "4 waiting" in section(running, "batch-counts")
    assert "Cancel" in text(running) and "runs already at Runflow finish, and are billed" in text(
        running
    )

    drain(lambda: finished(batch), timeout=40)
    assert len(quick.create_calls()) == 4
    assert batch.cells.count() == 4
    assert sorted(batch.made_runs.values_list("prompt_text", flat=True)) == [
        "cat",
        "cat",
        "ear",
        "ear",
    ]
    done = page(signed_in, batch)
    assert "Done" in section(done, "progress-title")
    assert "4 done" in section(done, "batch-counts")
    summary = section(done, "batch-summary")
    assert "4 of 4 runs finished (100%)" in summary
    assert "cost so far $0.02" in summary
    assert "hx-get" not in done.content.decode().split('id="batch-live"', 1)[1].split(">", 1)[0]
    rows = re.findall(r"<tr>.*?</tr>", done.content.decode(), re.S)[1:]
    assert len(rows) == 4
    assert all("Succeeded" in row for row in rows)
    # The dataset's downloads and the review are linked.
    html = done.content.decode()
    for fmt in ("coco.json", "coco.zip", "yolo.zip", "masks.zip"):
        assert f'formaction="/batches/{batch.pk}/export/{fmt}"' in html
    assert 'name="min_score"' in html and 'name="images" value="1"' in html
    assert f'href="/batches/{batch.pk}/review/"' in html
    assert signed_in.get(f"/batches/{batch.pk}/progress/").status_code == 286


@pytest.mark.django_db(transaction=True)
def test_a_second_batch_reuses_what_the_team_already_ran_and_links_to_it(
    signed_in: Client, owner, teammate, quick
) -> None:
    earlier = taken_in(signed_in, images=colours(2))
    signed_in.post(f"/batches/{earlier.pk}/start/")
    drain(lambda: finished(earlier), timeout=40)
    assert len(quick.create_calls()) == 4

    # The same two images and a new one; "ear" and "cat" again.
    batch = taken_in(signed_in, images=colours(3))
    preview = page(signed_in, batch)
    assert "3 images × 2 concepts = 6 runs, 4 of them reused: 2 to send × $0.005 = $0.01" in (
        section(preview, "batch-cost")
    )
    assert "4 runs the team already has" in section(preview, "batch-reused")

    signed_in.post(f"/batches/{batch.pk}/start/")
    drain(lambda: finished(batch), timeout=40)
    assert len(quick.create_calls()) == 6  # two more, never the four again
    response = page(signed_in, batch)
    html = response.content.decode()
    for run in earlier.made_runs.all():
        assert f'reused from <a href="/runs/{run.pk}/">run {str(run.pk)[:8]}</a>' in html
    assert "4 reused, not paid again" in section(response, "batch-summary")
    assert "cost so far $0.01" in section(response, "batch-summary")

    # "Run again anyway" sends everything.
    again = taken_in(signed_in, images=colours(2), run_again="on")
    assert "2 images × 2 concepts = 4 runs: 4 to send" in section(
        page(signed_in, again), "batch-cost"
    )


@pytest.mark.django_db(transaction=True)
def test_a_batch_over_the_budget_shows_why_and_cannot_be_started(
    signed_in: Client, owner, settings
) -> None:
    team.set_budget(owner, Decimal("0.01"))  # two runs' worth; the batch is four
    batch = taken_in(signed_in, images=colours(2))
    response = page(signed_in, batch)
    assert "ada has $0.01 left this month." in section(response, "batch-left")
    assert "Your monthly budget of $0.01 is spent" in section(response, "start-refusal")
    assert re.search(r"<button[^>]*disabled[^>]*>Start</button>", response.content.decode())
    refused = signed_in.post(f"/batches/{batch.pk}/start/", follow=True)
    assert "Not started. Your monthly budget" in text(refused)
    batch.refresh_from_db()
    assert batch.state == Batch.State.READY and not batch.cells.exists()


@pytest.mark.django_db(transaction=True)
def test_cancel_during_intake_leaves_the_rest_out_and_sends_nothing(
    signed_in: Client, standin, settings
) -> None:
    batch = post_batch(signed_in, images=colours(3))
    response = signed_in.post(f"/batches/{batch.pk}/cancel/", follow=True)
    assert "Canceled: the images not taken in yet were left out." in text(response)
    assert "before it was started: nothing was sent to Runflow" in text(response)
    assert f'href="/batches/new/?from={batch.pk}"' in response.content.decode()
    run_worker()  # the intake task finds the batch canceled
    batch.refresh_from_db()
    assert batch.state == Batch.State.CANCELED
    assert set(batch.items.values_list("state", flat=True)) == {BatchItem.State.REFUSED}
    assert not any(batch.items.values_list("upload", flat=True))
    assert standin.create_calls() == []
    twice = signed_in.post(f"/batches/{batch.pk}/cancel/", follow=True)
    assert "This batch was already canceled." in text(twice)
    retried = signed_in.post(f"/batches/{batch.pk}/retry/", follow=True)
    assert "This batch was never started: there is nothing to retry." in text(retried)
    started = signed_in.post(f"/batches/{batch.pk}/start/", follow=True)
    assert "Not started. This batch was canceled." in text(started)
    # The files waiting to be taken in were removed with the cancel.
    assert [
        p for p in (Path(settings.MEDIA_ROOT) / "batch-uploads").rglob("*") if p.is_file()
    ] == []


@pytest.mark.django_db(transaction=True)
def test_cancel_while_running_stops_what_was_not_sent_and_says_the_rest_is_billed(
    signed_in: Client, standin, settings
) -> None:
    settings.SAM3WEB_BATCH_CONCURRENCY = 1
    standin.complete_after = None  # what reaches Runflow stays there
    batch = taken_in(signed_in, images=colours(2))
    signed_in.post(f"/batches/{batch.pk}/start/")
    run_worker()
    assert len(standin.create_calls()) == 1
    response = signed_in.post(f"/batches/{batch.pk}/cancel/", follow=True)
    assert (
        "Canceled: 3 runs not sent yet will not be. 1 already at Runflow finishes, and is billed."
        in text(response)
    )
    canceled = section(response, "batch-canceled")
    assert "1 run already at Runflow finishes, and is billed." in canceled
    assert "3 canceled" in section(response, "batch-counts")
    assert "1 at Runflow" in section(response, "batch-counts")
    # What is at Runflow still finishes: the page keeps following it.
    assert signed_in.get(f"/batches/{batch.pk}/progress/").status_code == 200
    run_worker()
    assert len(standin.create_calls()) == 1
    assert "Retry failed (3)" in text(response)


@pytest.mark.django_db(transaction=True)
def test_retry_failed_sends_the_failed_runs_again_as_new_runs(signed_in: Client, quick) -> None:
    quick.outcome = "failed"
    batch = taken_in(signed_in, images=colours(1))
    signed_in.post(f"/batches/{batch.pk}/start/")
    drain(lambda: finished(batch), timeout=40)
    response = page(signed_in, batch)
    assert "2 failed" in section(response, "batch-counts")
    assert "Retry failed (2)" in text(response)

    quick.outcome = "succeeded"
    retried = signed_in.post(f"/batches/{batch.pk}/retry/", follow=True)
    assert "Sending 2 runs again, as new runs." in text(retried)
    drain(lambda: finished(batch), timeout=40)
    response = page(signed_in, batch)
    assert "2 done" in section(response, "batch-counts")
    assert "Retry failed" not in text(response)
    assert batch.made_runs.count() == 4  # the failed two are kept, beside their new runs
    nothing = signed_in.post(f"/batches/{batch.pk}/retry/", follow=True)
    assert "No run of this batch failed: there is nothing to retry." in text(nothing)


@pytest.mark.django_db(transaction=True)
def test_a_teammate_can_look_but_only_the_owner_or_an_admin_can_start_cancel_or_retry(
    signed_in: Client, teammate_client: Client, admin_client: Client, standin
) -> None:
    batch = taken_in(signed_in, images=colours(1))
    seen = page(teammate_client, batch)
    assert "Only ada, who made this batch, or an admin can start it." in text(seen)
    assert f'action="/batches/{batch.pk}/start/"' not in seen.content.decode()
    for action in ("start", "cancel", "retry"):
        refused = teammate_client.post(f"/batches/{batch.pk}/{action}/")
        assert refused.status_code == 403
        assert f"Only ada, who made this batch, or an admin can {action} it." in text(refused)
    batch.refresh_from_db()
    assert batch.state == Batch.State.READY
    assert admin_client.post(f"/batches/{batch.pk}/start/").status_code == 302
    batch.refresh_from_db()
    assert batch.state == Batch.State.RUNNING
    # GET does nothing.
    assert signed_in.get(f"/batches/{batch.pk}/cancel/").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_a_batch_with_no_good_image_says_so_and_the_form_comes_back_filled_in(
    signed_in: Client,
) -> None:
    batch = taken_in(
        signed_in,
        images=[SimpleUploadedFile("notes.txt", b"not an image at all")],
        concepts="hard hat\nsafety vest",
        include_boxes=None,
        max_masks="7",
    )
    response = page(signed_in, batch)
    assert "No image could be taken in" in text(response)
    assert "notes.txt: This file is not an image we can read" in section(response, "refused-title")
    assert ">Start</button>" not in response.content.decode()
    refused = signed_in.post(f"/batches/{batch.pk}/start/", follow=True)
    assert "Not started. No image of this batch could be taken in" in text(refused)

    again = signed_in.get(f"/batches/new/?from={batch.pk}")
    html = again.content.decode()
    assert re.search(r'name="concepts"[^>]*>\s*hard hat\nsafety vest</textarea>', html)
    assert re.search(r'name="max_masks" value="7"', html)
    checked = set(re.findall(r'<input type="checkbox" name="(\w+)"[^>]*checked', html))
    assert "include_boxes" not in checked and "include_scores" in checked
    # A link from nowhere is just the empty form.
    for junk in ("nope", "999999", "99999999999999999999999"):
        assert signed_in.get(f"/batches/new/?from={junk}").status_code == 200


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_image_at_all_is_refused_with_the_form_kept(signed_in: Client) -> None:
    response = signed_in.post(NEW, form(concepts="helmet\nvest"))
    assert response.status_code == 400
    assert "Add images: files, a ZIP or URLs." in text(response)
    assert re.search(r'name="concepts"[^>]*>\s*helmet\nvest</textarea>', response.content.decode())
    assert Batch.objects.count() == 0


@pytest.mark.django_db
def test_ten_thousand_urls_are_refused_beside_the_field_without_fetching_one(
    signed_in: Client,
) -> None:
    with ImageServer() as server:
        urls = "\n".join(server.url(f"/images/cat.jpg?n={n}") for n in range(10_000))
        response = signed_in.post(NEW, form(image_urls=urls))
        assert server.requests == []
    assert response.status_code == 400
    assert field_errors(response, "image_urls") == [
        "A batch takes at most 1,000 images; these are 10,000 URLs. Split them into several "
        "batches."
    ]
    assert Batch.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("concepts", "message"),
    [
        (
            "\n".join(f"thing {n}" for n in range(500)),
            "A batch takes at most 20 concepts; this has 500.",
        ),
        ("\n\n   \n , \n", "Give at least one concept, one per line (e.g. helmet)."),
        (
            "x" * 10_000,
            "This is 10,000 characters: a batch takes at most 20 concepts of at most 200 "
            "characters each.",
        ),
        ("cat\n" + "y" * 300, "A concept may be at most 200 characters; “yyyyyyyyyyyyyyyyyyyy"),
    ],
    ids=["500 concepts", "only empty lines", "a concept of 10 kB", "one too long"],
)
def test_bad_concepts_are_refused_beside_the_field(
    signed_in: Client, concepts: str, message: str
) -> None:
    response = signed_in.post(NEW, form(concepts=concepts, images=colours(1)))
    assert response.status_code == 400
    [error] = field_errors(response, "concepts")
    assert error.startswith(message)
    assert Batch.objects.count() == 0


@pytest.mark.django_db
def test_empty_concept_lines_and_repeats_are_dropped(signed_in: Client) -> None:
    batch = post_batch(
        signed_in, concepts="\n  hard   hat \n\n, cat,\n\nCat\n\n", images=colours(1)
    )
    assert batch.concepts == ["hard hat", "cat"]


@pytest.mark.django_db
def test_an_archive_that_is_not_a_zip_is_refused_beside_its_field(signed_in: Client) -> None:
    response = signed_in.post(
        NEW, form(archive=SimpleUploadedFile("photos.zip", image_bytes("cat.jpg")))
    )
    assert response.status_code == 400
    assert field_errors(response, "archive") == ["This file is not a ZIP archive."]
    assert "Add images" not in text(response)  # one message, where the problem is
    assert Batch.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_zip_is_taken_in_entry_by_entry(signed_in: Client) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("site/cat.jpg", image_bytes("cat.jpg"))
        archive.writestr("site/readme.txt", "notes")
    batch = taken_in(signed_in, archive=SimpleUploadedFile("site.zip", buf.getvalue()))
    response = page(signed_in, batch)
    assert "1 image accepted" in section(response, "accepted-title")
    assert "site.zip: site/readme.txt" in section(response, "refused-title")


@pytest.mark.django_db
def test_an_upload_past_the_limit_is_refused_with_the_other_fields_kept(
    signed_in: Client, settings
) -> None:
    settings.SAM3WEB_BATCH_MAX_UPLOAD_BYTES = 100_000
    big = SimpleUploadedFile("big.png", png_bytes(900, 900) + b"\0" * 150_000)
    response = signed_in.post(
        NEW, form(concepts="helmet", include_boxes=None, images=[upload("cat.jpg"), big])
    )
    assert response.status_code == 413
    assert "The upload is larger than the 100,000 bytes limit, so none of its files were kept." in (
        text(response)
    )
    html = response.content.decode()
    assert re.search(r'name="concepts"[^>]*>\s*helmet</textarea>', html)
    checked = set(re.findall(r'<input type="checkbox" name="(\w+)"[^>]*checked', html))
    assert "include_boxes" not in checked and "include_scores" in checked
    assert Batch.objects.count() == 0
    assert not default_storage.exists("batch-uploads")


@pytest.mark.django_db
def test_too_many_files_or_too_much_text_is_a_form_error_not_a_crash(
    signed_in: Client, settings
) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    response = signed_in.post(NEW, form(images=colours(5)))
    assert response.status_code == 400
    assert "Too many files: a batch takes at most 1,000 images." in text(response)

    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 100
    settings.SAM3WEB_BATCH_MAX_IMAGES = 3
    response = signed_in.post(NEW, form(images=colours(3), image_urls="https://example.com/a.jpg"))
    assert response.status_code == 400
    assert "A batch takes at most 3 images; these are 3 files and 1 URLs." in text(response)

    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    response = signed_in.post(NEW, form(images=colours(1)))
    assert response.status_code == 400
    assert "The form had far more fields than it has: nothing was made." in text(response)

    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = signed_in.post(NEW, form(image_urls="https://example.com/a.jpg\n" * 100))
    assert response.status_code == 413
    assert "The text fields are larger than" in text(response)
    assert Batch.objects.count() == 0


@pytest.mark.django_db
def test_the_form_still_checks_the_csrf_token(owner) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post(NEW, form(images=colours(1)))
    assert response.status_code == 403
    assert Batch.objects.count() == 0


@pytest.mark.django_db
def test_someone_not_signed_in_is_sent_to_sign_in(stranger: Client) -> None:
    for url in (NEW, "/batches/", "/batches/1/"):
        response = stranger.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
    assert stranger.post(NEW, form(images=colours(1))).status_code == 302
    assert Batch.objects.count() == 0


# --- the list, the history, and pages of many runs ---------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_list_shows_who_when_how_many_progress_and_cost_newest_first(
    signed_in: Client, teammate_client: Client, quick, django_assert_max_num_queries
) -> None:
    older = taken_in(signed_in, images=colours(2), name="Older")
    signed_in.post(f"/batches/{older.pk}/start/")
    drain(lambda: finished(older), timeout=40)
    taken_in(teammate_client, images=colours(3, start=10), concepts="dog", name="Newer")
    with django_assert_max_num_queries(6):
        response = signed_in.get("/batches/")
    rows = re.findall(r"<tr>.*?</tr>", response.content.decode(), re.S)[1:]
    first, second = (" ".join(unescape(re.sub(r"<[^>]+>", " ", r)).split()) for r in rows)
    assert first.startswith("Newer dog grace")
    assert "3 × 1" in first and "Ready to start" in first and "$0" in first
    assert second.startswith("Older cat, ear ada")
    assert "2 × 2" in second and "4 of 4 done" in second and "$0.02" in second


@pytest.mark.django_db(transaction=True)
def test_the_history_filters_by_batch_with_a_chip_that_removes_it(
    signed_in: Client, owner, standin
) -> None:
    other = make_run(owner, input={"prompt": "dog", **OPTIONS})
    earlier = make_run(owner, image="coins.png", input=batches.run_input("cat", OPTIONS))
    batch = taken_in(signed_in, images=[upload("coins.png"), upload("coffee.jpg")], concepts="cat")
    signed_in.post(f"/batches/{batch.pk}/start/")
    run_worker()
    mine = set(batch.cells.values_list("run_id", flat=True))
    assert earlier.pk in mine and other.pk not in mine and len(mine) == 2

    response = signed_in.get(f"/runs/?batch={batch.pk}")
    assert response.status_code == 200
    html = response.content.decode()
    shown = set(re.findall(r'id="run-([0-9a-f-]{36})"', html))
    assert shown == {str(pk) for pk in mine}
    chip = section(response, "batch-filter")
    assert chip.startswith(f"Only the runs of {batch}")
    assert re.search(r'<a href="/runs/" title="Show the runs of every batch"', html)
    assert f'<input type="hidden" name="batch" value="{batch.pk}"' in html
    # Another filter keeps the batch's, and its chip's × keeps the other.
    both = signed_in.get(f"/runs/?batch={batch.pk}&q=nothing-like-this")
    assert "No runs match these filters" in text(both)
    assert 'href="/runs/?q=nothing-like-this" title="Show the runs of every batch"' in (
        both.content.decode()
    )
    page_link = page(signed_in, batch).content.decode()
    assert f'href="/runs/?batch={batch.pk}"' in page_link

    for junk in ("999999", "abc", "99999999999999999999999", "-1"):
        refused = signed_in.get(f"/runs/?batch={junk}")
        assert refused.status_code == 400
        assert "There is no batch with that number" in text(refused)
        assert len(set(re.findall(r'id="run-([0-9a-f-]{36})"', refused.content.decode()))) == 3


@pytest.mark.django_db(transaction=True)
def test_a_batch_page_costs_the_same_queries_for_many_runs_as_for_a_few(
    signed_in: Client, standin, settings
) -> None:
    settings.SAM3WEB_BATCH_CONCURRENCY = 1

    def queries(images: int, concepts: int) -> int:
        names = "\n".join(f"thing {n}" for n in range(concepts))
        start = Batch.objects.count() * 100
        batch = taken_in(signed_in, images=colours(images, start=start), concepts=names)
        signed_in.post(f"/batches/{batch.pk}/start/")
        while "more to come" in batches.start_batch.call(batch.pk):
            pass  # made (in slices), not sent
        assert batch.cells.count() == images * concepts
        with CaptureQueriesContext(connection) as captured:
            shown = page(signed_in, batch)
        pages = -(-images * concepts // 100)
        assert len(re.findall(r"<tr>", shown.content.decode())) == min(images * concepts, 100) + 1
        assert (f"Page 1 of {pages}" in text(shown)) == (pages > 1)
        return len(captured)

    assert queries(1, 2) == queries(6, 20)
