"""A batch in Debian's Chromium, against the live app, the real worker and the Runflow stand-in:
files chosen and uploaded with a progress bar, intake followed live, the preview and its cost,
Start, and the progress bar filling up to done without a reload; files dropped on the page; a
form with errors coming back with the files still chosen; and the form without JavaScript."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from segmentation.models import Batch, Run
from tests.browser.helpers import serious, shot, sign_in
from tests.factories import worker_env
from tests.sample_images import IMAGES, ROOT

pytestmark = pytest.mark.django_db(transaction=True)

RECORDERS: list[str] = []
FILES = [IMAGES / "cat.jpg", IMAGES / "coins.png", IMAGES / "large-4032x3024.jpg"]


def keep_shot(page: Any, name: str) -> None:
    """A screenshot in test-artifacts/screenshots/ and one in /tmp to look at."""
    shot(page, f"batch-{name}")
    shutil.copy(
        ROOT / "test-artifacts" / "screenshots" / f"batch-{name}.png", f"/tmp/batch-{name}.png"
    )


@pytest.fixture
def start_worker(standin: Any, live_server: Any, settings: Any) -> Iterator[Any]:
    """Starts the real worker, as bin/serve runs it, when the test says; Runflow calls the app
    back the moment a run ends."""
    settings.SAM3WEB_PUBLIC_URL = live_server.url
    standin.complete_after = 0.4
    standin.callback_backoff = (0.1, 0.1)
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "worker", "--", "--no-startup-delay"],
                cwd=ROOT,
                env=worker_env(standin, SAM3WEB_PUBLIC_URL=live_server.url),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def record(page: Any, selector: str) -> list[str]:
    """Every text the element shows, as it changes (htmx replaces it: the page is watched)."""
    seen: list[str] = []
    name = f"sam3Seen{len(RECORDERS)}"  # a page takes each name once
    RECORDERS.append(name)
    page.expose_function(name, lambda text: seen.append(text))
    page.evaluate(
        """([selector, name]) => {
          let last = null;
          const look = () => {
            const el = document.querySelector(selector);
            const text = el ? el.textContent.replace(/\\s+/g, " ").trim() : null;
            if (text !== null && text !== last) { last = text; window[name](text); }
          };
          new MutationObserver(look).observe(document.body,
            { childList: true, subtree: true, characterData: true, attributes: true });
          look();
        }""",
        [selector, name],
    )
    return seen


def chosen(page: Any, name: str = "images") -> list[str]:
    return page.evaluate(
        f"[...document.querySelector('input[name={name}]').files].map((f) => f.name)"
    )


def test_a_batch_is_uploaded_previewed_started_and_followed_live_to_the_end(
    page, live_server, start_worker, standin, page_errors
) -> None:
    page.goto(f"{live_server.url}/batches/new/")
    page.get_by_label("Concepts").fill("cat\ncoin")
    page.get_by_label("Image files").set_input_files([str(p) for p in FILES])
    size = sum(p.stat().st_size for p in FILES) / 1_000_000
    expect(page.locator("#images-chosen")).to_have_text(f"3 files chosen ({size:.1f} MB).")
    assert serious(page) == []
    keep_shot(page, "new")

    uploading = record(page, "#upload-status")
    page.get_by_role("button", name="Upload and preview").click()
    page.wait_for_url(re.compile(r".*/batches/\d+/$"))
    assert "Starting the upload…" in uploading
    assert any(re.fullmatch(r"Uploading: \d+% \(.* MB of .* MB\)\.", s) for s in uploading)
    assert "Uploaded. Making the batch…" in uploading

    # No worker yet: the page says the images are being taken in, and follows it.
    batch = Batch.objects.get()
    expect(page.locator("#batch-intake")).to_contain_text("0 of 3 taken in (0%)")
    keep_shot(page, "intake")
    start_worker()
    expect(page.locator("#batch-preview")).to_be_visible(timeout=30_000)
    expect(page.locator("#batch-cost")).to_have_text(
        "3 images × 2 concepts = 6 runs: 6 to send × $0.005 = $0.03"
    )
    expect(page.locator("#accepted-title")).to_have_text("3 images accepted")
    assert standin.create_calls() == []
    assert serious(page) == []
    keep_shot(page, "preview")

    page.get_by_role("button", name="Start").click()
    page.wait_for_url(f"**/batches/{batch.pk}/")
    expect(
        page.get_by_text("Started: its runs are being made and sent to Runflow.")
    ).to_be_visible()
    page.evaluate("window.sam3SamePage = true")
    keep_shot(page, "running")
    summaries = record(page, "#batch-summary")
    expect(page.locator("#progress-title")).to_have_text("Done", timeout=60_000)
    expect(page.locator("#batch-counts")).to_contain_text("6 done")
    expect(page.locator("#batch-summary")).to_contain_text("6 of 6 runs finished (100%)")
    expect(page.locator("#batch-summary")).to_contain_text("cost so far $0.03")
    assert page.evaluate("window.sam3SamePage") is True  # updated in place, never reloaded
    assert len(summaries) >= 2 and not summaries[0].startswith("6 of 6")
    assert page.locator("#batch-runs tbody tr").count() == 6
    assert len(standin.create_calls()) == 6
    assert sorted(Run.objects.values_list("status", flat=True)) == [Run.Status.SUCCEEDED] * 6
    keep_shot(page, "done")
    assert page_errors == []


def test_files_dropped_anywhere_on_the_page_join_the_images_and_a_zip_goes_to_its_field(
    page, live_server
) -> None:
    page.goto(f"{live_server.url}/batches/new/")
    page.get_by_label("Image files").set_input_files(str(IMAGES / "cat.jpg"))
    files = [
        {"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()}
        for p in (IMAGES / "coins.png", IMAGES / "coffee.jpg")
    ] + [{"name": "photos.zip", "data": base64.b64encode(b"PK\x05\x06" + bytes(18)).decode()}]
    data = page.evaluate_handle(
        """(files) => {
          const list = new DataTransfer();
          for (const f of files) {
            const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
            list.items.add(new File([bytes], f.name));
          }
          return list;
        }""",
        files,
    )
    # On the heading, not the form: anywhere on the page takes them.
    page.dispatch_event("h1", "dragenter", {"dataTransfer": data})
    page.dispatch_event("h1", "dragover", {"dataTransfer": data})
    expect(page.locator(".bt-drop")).to_be_visible()
    page.dispatch_event("h1", "drop", {"dataTransfer": data})
    expect(page.locator(".bt-drop")).to_be_hidden()
    expect(page.locator("#images-chosen")).to_contain_text("3 files chosen")
    assert chosen(page) == ["cat.jpg", "coins.png", "coffee.jpg"]
    assert chosen(page, "archive") == ["photos.zip"]


def test_a_form_with_errors_comes_back_beside_the_fields_with_the_files_still_chosen(
    page, live_server, page_errors
) -> None:
    page.goto(f"{live_server.url}/batches/new/")
    page.get_by_label("Image files").set_input_files([str(p) for p in FILES[:2]])
    page.get_by_label("Concepts").fill("\n".join(f"thing {n}" for n in range(500)))
    page.get_by_role("button", name="Upload and preview").click()
    expect(page.locator("#field-concepts .field-errors")).to_have_text(
        "A batch takes at most 20 concepts; this has 500."
    )
    assert page.url.endswith("/batches/new/")
    assert chosen(page) == ["cat.jpg", "coins.png"]
    expect(page.locator("#images-chosen")).to_contain_text("2 files chosen")
    expect(page.locator('[data-role="files-lost"]')).to_be_hidden()
    assert Batch.objects.count() == 0

    page.get_by_label("Concepts").fill("cat")
    page.get_by_role("button", name="Upload and preview").click()
    page.wait_for_url(re.compile(r".*/batches/\d+/$"))
    assert Batch.objects.get().items.count() == 2
    # Chromium notes the 400 the form came back with; nothing else went wrong.
    assert [e for e in page_errors if "status of 400" not in e] == []


def test_files_past_the_upload_limit_are_refused_before_they_are_sent(
    page, live_server, settings
) -> None:
    settings.SAM3WEB_BATCH_MAX_UPLOAD_BYTES = 500_000
    page.goto(f"{live_server.url}/batches/new/")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.get_by_label("Image files").set_input_files([str(p) for p in FILES])
    expect(page.locator('[data-role="too-much"]')).to_contain_text(
        "one upload takes at most 0.5 MiB"
    )
    page.get_by_label("Concepts").fill("cat")
    page.get_by_role("button", name="Upload and preview").click()
    page.wait_for_timeout(300)
    assert posts == [] and Batch.objects.count() == 0


def test_without_javascript_the_form_posts_as_it_is(browser, live_server, owner) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, f"{live_server.url}/batches/new/")
        page.get_by_label("Concepts").fill("cat")
        page.get_by_label("Image files").set_input_files([str(p) for p in FILES[:2]])
        page.get_by_role("button", name="Upload and preview").click()
        page.wait_for_url(re.compile(r".*/batches/\d+/$"))
        expect(page.locator("#batch-intake")).to_contain_text("0 of 2 taken in")
    finally:
        context.close()
