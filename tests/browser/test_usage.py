"""The usage page in Debian's Chromium, at a desktop's width and a phone's: the chart and
table are there, and axe-core finds nothing serious."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from segmentation.models import Run
from segmentation.usage import month_starts
from tests.browser.helpers import serious, shot, sign_in
from tests.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)

S = Run.Status


def made(owner: Any, status: str, *, hours: float, **fields: Any) -> Run:
    """A run made ``hours`` into the current month."""
    run = make_run(owner, status=status, **fields)
    start = month_starts(timezone.now())[-2] + dt.timedelta(hours=hours)
    Run.objects.filter(pk=run.pk).update(created_at=start)
    return run


def test_the_usage_page_is_accessible(
    browser,
    live_server,
    owner,
    teammate,
) -> None:
    made(owner, S.SUCCEEDED, cost=Decimal("0.005"), hours=1, duration_ms=900)
    made(teammate, S.SUCCEEDED, hours=2, duration_ms=1200)
    made(teammate, S.FAILED, cost=Decimal("0"), hours=3, duration_ms=300)
    problems = {}
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        sign_in(page, f"{live_server.url}/usage/")
        assert page.get_by_role("img", name=re.compile("cost per month")).is_visible()
        problems[width] = serious(page)
        shot(page, f"usage-{width}")
        context.close()
    assert problems == {1280: [], 390: []}
