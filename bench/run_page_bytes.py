"""Bytes a browser downloads to show a run's page, with the original photo and with its display
copy:

- a run on large-4032x3024.jpg (12 MP, 808 KiB) with masks from the Runflow stand-in (text
  prompt, return_multiple_masks, max_masks), copied by the app's real `copy_artifacts` task in
  the real database worker; the photo taken in by the app's intake, which makes its display
  copy (SAM3WEB_DISPLAY_SIZE, 2048 px: a 2016×1512 WebP);
- the app served by gunicorn with collected, compressed static files (as bin/serve runs it),
  started twice: "before" with SAM3WEB_DISPLAY_SIZE=0 (pages load the original, as before
  display copies), "after" as shipped;
- the run page opened in Debian's Chromium (headless) with an empty cache, until the viewer
  has drawn every mask and the network is idle;
- printed: the bytes transferred (Chromium's encodedDataLength: bodies as sent plus headers),
  by type of response, before and after, and the ratio.

    .venv/bin/python bench/run_page_bytes.py [--masks 32] [--repeats 3]

Runs against a throwaway data folder, never the app's own."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    copied_run,
    free_port,
    served_env,
    start_gunicorn,
    throwaway_django,
)
from tests.sample_images import IMAGES  # noqa: E402

DATA = throwaway_django()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from PIL import Image  # noqa: E402

from segmentation.models import Run  # noqa: E402

PHOTO = IMAGES / "large-4032x3024.jpg"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KIB = 1024
# How the rows group Chromium's resource types.
KINDS = {
    "Document": "page HTML",
    "Stylesheet": "style sheets",
    "Script": "scripts",
    "Image": "images",
    "Fetch": "viewer data (viewer.json, mask crops)",
    "XHR": "viewer data (viewer.json, mask crops)",
}
ORDER = [
    "page HTML",
    "style sheets",
    "scripts",
    "images",
    "viewer data (viewer.json, mask crops)",
    "other",
]


def page_bytes(browser, base: str, cookies: dict[str, str], run: Run) -> dict:
    """One load of the run page in a fresh context (empty cache): bytes by kind, the image
    requests, and how many requests."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": k, "value": v, "url": base} for k, v in cookies.items()])
    page = context.new_page()
    page.set_default_timeout(60_000)
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    seen: dict[str, tuple[str, str]] = {}
    sizes: dict[str, int] = {}
    cdp.on(
        "Network.responseReceived",
        lambda e: seen.__setitem__(e["requestId"], (e.get("type", "Other"), e["response"]["url"])),
    )
    cdp.on(
        "Network.loadingFinished",
        lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])),
    )
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
    )
    start = time.perf_counter()
    response = page.goto(f"{base}/runs/{run.id}/")
    assert response is not None and response.ok, response and response.status
    try:
        page.locator(".sam3-viewer[data-state=ready]").wait_for()
    except Exception:
        print("  the viewer did not start:", problems or "no error in the page")
        raise
    ready = (time.perf_counter() - start) * 1000
    page.wait_for_load_state("networkidle")
    decoded = page.evaluate(
        """() => performance.getEntriesByType("resource")
          .filter((e) => new URL(e.name).pathname.startsWith("/images/"))
          .map((e) => [new URL(e.name).pathname, e.decodedBodySize])"""
    )
    context.close()
    by_kind: dict[str, int] = defaultdict(int)
    for rid, size in sizes.items():
        kind, _url = seen.get(rid, ("Other", ""))
        by_kind[KINDS.get(kind, "other")] += size
    return {
        "kinds": dict(by_kind),
        "total": sum(sizes.values()),
        "requests": len(sizes),
        "images": decoded,
        "ready": ready,
    }


def measure(label: str, env: dict[str, str], cookies, run: Run, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = start_gunicorn(port, env, workers=1)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
            )
            loads = [page_bytes(browser, base, cookies, run) for _ in range(repeats)]
            browser.close()
    finally:
        app.terminate()
        app.wait(10)
    # Bytes are the same on every load (nothing is cached across fresh contexts): keep the
    # first, and check it.
    first = loads[0]
    assert all(load["total"] == first["total"] for load in loads), [x["total"] for x in loads]
    first["ready_median"] = statistics.median(load["ready"] for load in loads)
    print(
        f"  {label}: {first['requests']} requests, {first['total'] / KIB:,.1f} KiB;"
        f" image(s) requested: {', '.join(p for p, _ in first['images'])}"
    )
    return first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--masks", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"sam3web run page bytes benchmark · data in {DATA}")
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-123")
    run = copied_run(PHOTO, user, args.masks)
    image = run.image
    assert image.display, "the photo got no display copy"
    client = Client()
    client.force_login(user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    env = served_env()
    before = measure(
        "before (original)", {**env, "SAM3WEB_DISPLAY_SIZE": "0"}, cookies, run, args.repeats
    )
    after = measure("after (display copy)", env, cookies, run, args.repeats)

    original, copy = image.byte_size, image.display.size
    with image.display.open("rb") as f:
        shown = Image.open(f).size
    print(
        f"\nChromium, 1280×900, empty cache: the page of a run on {PHOTO.name}"
        f" ({image.width}×{image.height}, {original / KIB:,.0f} KiB) with {args.masks} masks,"
        f" until the viewer has drawn them (median {before['ready_median']:.0f} ms before,"
        f" {after['ready_median']:.0f} ms after)"
    )
    kind = (image.display.name or "").rsplit(".")[-1].upper()
    print(
        f"  display copy: {shown[0]}×{shown[1]} {kind},"
        f" {copy / KIB:,.1f} KiB ({original / copy:.1f}× smaller than the original)"
    )
    print(f"\n  {'transferred':<40} {'before':>12} {'after':>12}")
    for kind in ORDER:
        b, a = before["kinds"].get(kind, 0), after["kinds"].get(kind, 0)
        if b or a:
            print(f"  {kind:<40} {b / KIB:>8,.1f} KiB {a / KIB:>8,.1f} KiB")
    print(
        f"  {'total':<40} {before['total'] / KIB:>8,.1f} KiB {after['total'] / KIB:>8,.1f} KiB"
        f"   ratio {before['total'] / after['total']:.2f}× "
        f"({100 * (1 - after['total'] / before['total']):.0f}% less)"
    )
    decoded_before = sum(size for _, size in before["images"])
    decoded_after = sum(size for _, size in after["images"])
    print(
        f"  photo decoded by the browser: {image.width * image.height / 1e6:.1f} MP before,"
        f" {shown[0] * shown[1] / 1e6:.1f} MP after (image bodies {decoded_before / KIB:,.0f}"
        f" KiB → {decoded_after / KIB:,.0f} KiB)"
    )


if __name__ == "__main__":
    main()
