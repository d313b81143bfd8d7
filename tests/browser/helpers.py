"""Small things the browser tests do: screenshots and accessibility checks."""

from __future__ import annotations

import shutil
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from segmentation.models import Run
from tests.conftest import PASSWORD
from tests.factories import drain, settled, submit, upload
from tests.sample_images import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "test-artifacts" / "screenshots"


def sign_in(page: Any, url: str, username: str = "ada", password: str = PASSWORD) -> None:
    """Open `url` (a page that asks to sign in first) and sign in through the form; back on
    `url` once signed in."""
    page.set_default_timeout(15_000)
    page.goto(url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url)


def new_page(browser: Any, url: str, **context: Any) -> tuple[Any, Any]:
    """A window of its own (a phone, say, or no JavaScript), signed in at `url` as the
    `owner` fixture: the context (to close) and the page."""
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    sign_in(page, url)
    return ctx, page


def shot(page: Any, name: str) -> None:
    """A full-page screenshot under test-artifacts/screenshots/, listed after the run."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def serious(page: Any, context: str | None = None) -> list[str]:
    """axe-core's serious and critical findings on the page (or the part named)."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, context=context) if context else Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


# --- the canvas viewer ------------------------------------------------------------------------

# Four separate objects on coffee.jpg (600×400): the stand-in fills the ellipse in each box.
BOXES = [(30, 30, 170, 150), (330, 40, 470, 160), (60, 230, 220, 370), (380, 230, 560, 380)]
TAB10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]

# The canvas pixel at image point (x, y), after the next frame has been drawn.
PIXEL_JS = """async ([x, y]) => {
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const v = window.sam3Viewer.view();
  const c = document.querySelector(".sam3-viewer .sv-canvas");
  const px = Math.floor((x * v.scale + v.tx) * v.dpr);
  const py = Math.floor((y * v.scale + v.ty) * v.dpr);
  return Array.from(c.getContext("2d").getImageData(px, py, 1, 1).data.slice(0, 3));
}"""


def centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def pixel(page, x: float, y: float) -> tuple[int, int, int]:
    return tuple(page.evaluate(PIXEL_JS, [x, y]))


def blend(under, colour, alpha: float) -> tuple[float, ...]:
    return tuple(u * (1 - alpha) + c * alpha for u, c in zip(under, colour, strict=True))


def close(a, b, tol: float = 6) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def viewer_ready(page) -> None:
    page.locator(".sam3-viewer[data-state=ready]").wait_for()


def run_to_the_end(owner: Any, **form: Any) -> Run:
    """A run made through the form and taken to the end by the real worker."""
    client = Client()
    client.force_login(owner)
    run = submit(client, **form)
    drain(settled(run))
    return Run.objects.get(pk=run.pk)


def box_form() -> dict[str, str | SimpleUploadedFile]:
    """The new-run form's fields for the coffee photo with its boxes (the image an upload)."""
    boxes = ",".join(
        f'{{"x_min": {a}, "y_min": {b}, "x_max": {c}, "y_max": {d}}}' for a, b, c, d in BOXES
    )
    return {
        "image": upload("coffee.jpg"),
        "prompt": "",
        "box_prompts": f"[{boxes}]",
        "return_multiple_masks": "on",
        "max_masks": "5",
    }
