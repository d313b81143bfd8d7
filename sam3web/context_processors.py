"""What every page needs to know about the install itself."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def install(request: HttpRequest) -> dict[str, Any]:
    # A demo (bin/serve --demo) says so on every page: its results are simulated.
    return {"demo": settings.SAM3WEB_DEMO}
