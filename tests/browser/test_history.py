"""The history page in Chromium: filtering and paging without reloading the page (htmx), a run
in flight updating in place, picking runs to compare, and the same page without JavaScript."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from segmentation.models import Run
from tests.browser.helpers import shot, sign_in
from tests.factories import stored_image

pytestmark = pytest.mark.django_db(transaction=True)

PROMPTS = ["cat", "coffee cup", "wheel", "keyboard", "zebra crossing", "red car"]


@pytest.fixture
def runs(owner, teammate) -> list[Run]:
    pictures = [stored_image(name) for name in ("cat.jpg", "coffee.jpg", "coins.png")]
    made = []
    now = timezone.now()
    for i in range(30):
        run = Run.objects.create(
            owner=owner if i % 2 else teammate,
            image=pictures[i % 3],
            input={"prompt": PROMPTS[i % len(PROMPTS)] + f" {i}"},
            status=Run.Status.RUNNING if i == 29 else Run.Status.SUCCEEDED,
            duration_ms=None if i == 29 else 900 + i * 10,
            mask_count=0 if i == 29 else i % 5,
        )
        Run.objects.filter(pk=run.pk).update(created_at=now - dt.timedelta(minutes=30 - i))
        made.append(run)
    return made


def cards(page) -> list[str]:
    return page.eval_on_selector_all(".run-card-body", "els => els.map(e => e.id.slice(4))")


def test_filter_page_and_watch_a_run_finish_without_reloading(page, live_server, runs) -> None:
    page.goto(f"{live_server.url}/runs/")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    newest = runs[::-1]
    assert cards(page) == [str(r.pk) for r in newest[:24]]
    assert page.get_by_role("status").filter(has_text="30 runs").count() == 1
    shot(page, "history-grid")

    # Typing in the search box filters as you type, and the address follows.
    page.get_by_label("Search prompts").fill("zebra")
    page.wait_for_url("**/runs/?*q=zebra*")
    page.wait_for_function("document.querySelectorAll('.run-card-body').length === 5")
    assert all("zebra" in t for t in page.locator(".run-title").all_inner_texts())
    page.get_by_label("Teammate").select_option("ada")  # every zebra is grace's
    page.wait_for_url("**owner=ada**")
    page.get_by_text("No runs match these filters").wait_for()
    assert cards(page) == []
    page.get_by_label("Search prompts").fill("")
    page.wait_for_function("document.querySelectorAll('.run-card-body').length === 15")
    shot(page, "history-filtered")
    assert page.evaluate("window.__sameDocument") is True

    # Paging: "Older" brings the rest, in place.
    page.goto(f"{live_server.url}/runs/")
    page.evaluate("window.__sameDocument = true")
    page.get_by_role("link", name="Older →").click()
    page.wait_for_url("**after=**")
    page.wait_for_function("document.querySelectorAll('.run-card-body').length === 6")
    assert cards(page) == [str(r.pk) for r in newest[24:]]
    page.get_by_role("link", name="← Newer").click()
    page.wait_for_function("document.querySelectorAll('.run-card-body').length === 24")
    assert page.evaluate("window.__sameDocument") is True

    # The run in flight finishes: its card changes by itself, the ticked box stays ticked.
    running = runs[29]
    card = page.locator(f"#run-{running.pk}")
    assert "Running" in card.inner_text()
    page.locator(f'input[name="ids"][value="{running.pk}"]').check()
    Run.objects.filter(pk=running.pk).update(
        status=Run.Status.SUCCEEDED, mask_count=4, duration_ms=1500, cost="0.005"
    )
    page.wait_for_function(
        f"document.querySelector('#run-{running.pk}').innerText.includes('Succeeded')",
        timeout=8000,
    )
    assert "4 masks" in card.inner_text() and "1,500 ms" in card.inner_text()
    assert page.locator(f'input[name="ids"][value="{running.pk}"]').is_checked()

    # Two ticked runs go to the compare page; the button waits for the second.
    compare = page.get_by_role("button", name="Compare selected")
    assert compare.is_disabled() and "tick one more" in page.locator("#compare-form").inner_text()
    page.locator(f'input[name="ids"][value="{runs[27].pk}"]').check()
    assert compare.is_enabled() and "2 ticked" in page.locator("#compare-form").inner_text()
    compare.click()
    page.wait_for_url("**/runs/compare/?ids=*")
    assert f"ids={running.pk}" in page.url and f"ids={runs[27].pk}" in page.url


def test_the_history_page_works_without_javascript(browser, live_server, owner, runs) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
    page = context.new_page()
    sign_in(page, f"{live_server.url}/runs/")
    page.get_by_label("Search prompts").fill("keyboard")
    page.get_by_label("Only my runs").check()
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**q=keyboard**")
    titles = page.locator(".run-title").all_inner_texts()
    assert titles and all("keyboard" in t for t in titles)
    expected = Run.objects.filter(owner=owner, prompt_text__contains="keyboard").count()
    assert len(titles) == expected
    shot(page, "history-phone-nojs")
    context.close()
