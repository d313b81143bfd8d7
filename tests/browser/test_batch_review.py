"""Reviewing a batch in Debian's Chromium: the grid sorted with the doubtful image first, one
image opened, an instance rejected (marked, the count drops, the picture follows) and the
rejection undone."""

from __future__ import annotations

import re

import pytest

from segmentation.models import BatchItem, BatchRun, Rejection
from tests.browser.helpers import serious, shot
from tests.factories import stored_image
from tests.segmentation.views.test_batch_review import new_batch, new_item, run_on

pytestmark = pytest.mark.django_db(transaction=True)


def screenshot(page, name: str) -> None:
    shot(page, name)
    page.screenshot(path=f"/tmp/{name}.png", full_page=True)


def test_review_sort_open_reject_and_undo(page, live_server, owner, page_errors) -> None:
    batch = new_batch(owner)
    images = {name: stored_image(name) for name in ("cat.jpg", "coffee.jpg", "horse.png")}
    sure = new_item(batch, 0, images["cat.jpg"], "cat.jpg")
    doubtful = new_item(batch, 1, images["coffee.jpg"], "coffee.jpg")
    empty = new_item(batch, 2, images["horse.png"], "horse.png")
    for item, helmets, vests in (
        (sure, [0.96, 0.93], [0.9]),
        (doubtful, [0.88, 0.31], []),
        (empty, [], []),
    ):
        image = item.image
        assert image is not None
        BatchRun.objects.create(
            batch=batch, item=item, concept="helmet", run=run_on(owner, image, helmets)
        )
        BatchRun.objects.create(
            batch=batch,
            item=item,
            concept="vest",
            run=run_on(owner, image, vests, boxes=[(300, 150, 420, 280)]),
        )

    page.goto(f"{live_server.url}/batches/{batch.pk}/review/")
    page.get_by_role("heading", name="Review: Site photos").wait_for()
    tiles = page.locator(".review-tile")
    assert tiles.count() == 3
    assert tiles.first.locator(".review-name").inner_text() == "cat.jpg"
    legend = page.get_by_role("list", name="Concepts and their colours")
    assert "helmet 4" in legend.inner_text() and "vest 1" in legend.inner_text()
    # Every tile's picture is drawn (none broken).
    page.wait_for_function(
        "() => [...document.querySelectorAll('.review-tile img')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )

    # Lowest score first: the doubtful image leads (the form works without a button, by htmx).
    page.get_by_label("Order").select_option("score")
    page.wait_for_url(re.compile(r"sort=score"))
    page.wait_for_function(
        "() => document.querySelector('.review-tile .review-name').textContent === 'coffee.jpg'"
    )
    assert tiles.first.locator(".review-facts").inner_text().startswith("Lowest score 0.31")
    assert serious(page) == []
    screenshot(page, "review-grid")

    tiles.first.locator("a.review-thumb").click()
    page.wait_for_url(re.compile(rf"/batches/{batch.pk}/items/{doubtful.pk}/\?sort=score"))
    page.get_by_role("heading", name="coffee.jpg").wait_for()
    assert page.get_by_text("Image 1 of 3").is_visible()
    counts = page.locator("#item-counts")
    assert counts.inner_text() == "2 instances kept."
    overlay = page.locator("#item-overlay")
    before = overlay.get_attribute("src")

    page.get_by_role("button", name="Reject helmet instance 2").click()
    row = page.locator(
        "tr", has=page.get_by_role("button", name="Undo the rejection of helmet instance 2")
    )
    row.wait_for()
    assert "Rejected" in row.inner_text() and "by ada" in row.inner_text()
    assert counts.inner_text() == "1 instance kept, 1 rejected."
    assert page.locator("#concept-count-0").inner_text() == "1"
    # The picture is drawn again, with the rejected instance only outlined.
    assert overlay.get_attribute("src") != before
    page.wait_for_function(
        "() => { const img = document.getElementById('item-overlay');"
        " return img.complete && img.naturalWidth > 0; }"
    )
    rejection = Rejection.objects.get()
    assert rejection.mask.score == pytest.approx(0.31) and rejection.by == owner
    assert serious(page) == []
    screenshot(page, "review-item-rejected")

    row.get_by_role("button", name="Undo the rejection of helmet instance 2").click()
    page.get_by_role("button", name="Reject helmet instance 2").wait_for()
    assert counts.inner_text() == "2 instances kept."
    assert not Rejection.objects.exists()

    # The whole image, and back.
    page.get_by_role("button", name="Reject the whole image").click()
    page.get_by_role("button", name="Undo: keep the image").wait_for()
    assert BatchItem.objects.get(pk=doubtful.pk).rejected
    page.get_by_role("button", name="Undo: keep the image").click()
    page.get_by_role("button", name="Reject the whole image").wait_for()
    assert not BatchItem.objects.get(pk=doubtful.pk).rejected

    page.get_by_role("link", name="Next →").click()
    page.get_by_role("heading", name="cat.jpg").wait_for()
    assert page.get_by_text("Image 2 of 3").is_visible()
    assert page_errors == []


def test_reject_without_javascript(browser, live_server, owner) -> None:
    from tests.browser.helpers import new_page

    batch = new_batch(owner)
    cat = stored_image("cat.jpg")
    item = new_item(batch, 0, cat, "cat.jpg")
    BatchRun.objects.create(batch=batch, item=item, concept="helmet", run=run_on(owner, cat, [0.7]))
    url = f"{live_server.url}/batches/{batch.pk}/items/{item.pk}/"
    ctx, page = new_page(browser, url, java_script_enabled=False)
    try:
        page.get_by_role("button", name="Reject helmet instance 1").click()
        page.get_by_text("Instance 1 of “helmet” was rejected").wait_for()
        assert page.locator("#item-counts").inner_text() == "0 instances kept, 1 rejected."
        page.get_by_role("button", name="Undo the rejection of helmet instance 1").click()
        page.get_by_text("Instance 1 of “helmet” is kept again.").wait_for()
        assert not Rejection.objects.exists()
    finally:
        ctx.close()
