"""A demo install (bin/serve --demo sets SAM3WEB_DEMO) says on every page that its results are
simulated; a real one never does."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

BANNER = "Demo: simulated results."


@pytest.mark.parametrize("path", ["/runs/new/", "/runs/", "/usage/"])
def test_every_page_of_a_demo_says_so(signed_in: Client, settings, path: str) -> None:
    settings.SAM3WEB_DEMO = True
    assert BANNER in signed_in.get(path).content.decode()


def test_the_sign_in_page_of_a_demo_says_so(client: Client, owner, settings) -> None:
    settings.SAM3WEB_DEMO = True
    assert BANNER in client.get("/accounts/login/").content.decode()


def test_a_real_install_does_not(signed_in: Client) -> None:
    assert BANNER not in signed_in.get("/runs/new/").content.decode()
