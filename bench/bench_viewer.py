"""The run page's canvas viewer on a phone photo with many masks, in Chromium:

- a run on large-4032x3024.jpg with 32 masks from the Runflow stand-in (text prompt,
  return_multiple_masks, max_masks 32), copied by the app's real `copy_artifacts` task in the
  real database worker;
- the app served by gunicorn with collected, compressed static files (as bin/serve runs it);
- the run page opened in Debian's Chromium (headless, software rendering: no GPU here);
- printed: the viewer's redraw time per frame (performance.now() around each frame's drawing,
  median and p95) when toggling one instance 50 times and when moving the minimum score in 50
  steps; the same with the canvas flushed inside the timing (getImageData forces Chromium to
  rasterise, which it otherwise does later, off the clock); the bytes the run page transfers
  apart from the photo itself, and the mask data the viewer loads (crops + viewer.json).

    .venv/bin/python bench/bench_viewer.py [--masks 32] [--repeats 50] [--dpr 1,2]

Runs against a throwaway data folder, never the app's own."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    copied_run,
    free_port,
    pct,
    served_env,
    start_gunicorn,
    throwaway_django,
)
from tests.sample_images import IMAGES  # noqa: E402

DATA = throwaway_django()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from segmentation.models import Run  # noqa: E402

PHOTO = IMAGES / "large-4032x3024.jpg"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The photo: its display copy (what the page loads), or the original.
SOURCE_IMAGE = re.compile(r"/images/\d+/(display/)?$")


def start_app(port: int, env: dict[str, str]) -> subprocess.Popen:
    return start_gunicorn(port, env, workers=1)


def server_timings(user, run: Run) -> list[dict]:
    """The two views in this process (Django's test client, no HTTP server), cache cleared
    where the figure is for a first request."""
    from django.core.cache import cache

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    client = Client()
    client.force_login(user)

    def timed(url: str) -> float:
        start = time.perf_counter()
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        return (time.perf_counter() - start) * 1000

    url = f"/runs/{run.id}/viewer.json"
    cold_json = []
    for _ in range(3):
        cache.clear()
        cold_json.append(timed(url))
    warm_json = statistics.median(timed(url) for _ in range(10))
    instances = client.get(url).json()["instances"]
    crops = [i["crop_url"] for i in instances]
    warm_crops = [timed(u) for u in crops]
    cache.clear()
    cold_crops = [timed(u) for u in crops]
    print("\nServer views (in this process, Django's test client):")
    print(
        f"  viewer.json  first {statistics.median(cold_json):6.1f} ms (decodes each mask once: its"
        f" region and crop)   then {warm_json:5.1f} ms"
    )
    print(
        f"  mask crop    after viewer.json {statistics.median(warm_crops):5.1f} ms"
        f" (from the cache) · alone {statistics.median(cold_crops):5.1f} ms median,"
        f" p95 {pct(cold_crops, 0.95):5.1f} ms (decoding its 12 MP mask)"
    )
    return instances


def in_browser(browser, base: str, cookies: dict[str, str], run: Run, dpr: float, n: int):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=dpr)
    context.add_cookies([{"name": k, "value": v, "url": base} for k, v in cookies.items()])
    page = context.new_page()
    page.set_default_timeout(60_000)
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    urls: dict[str, str] = {}
    sizes: dict[str, int] = {}
    cdp.on(
        "Network.responseReceived", lambda e: urls.__setitem__(e["requestId"], e["response"]["url"])
    )
    cdp.on(
        "Network.loadingFinished",
        lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])),
    )
    start = time.perf_counter()
    page.goto(f"{base}/runs/{run.id}/")
    page.locator(".sam3-viewer[data-state=ready]").wait_for()
    ready = (time.perf_counter() - start) * 1000
    page.wait_for_load_state("networkidle")
    marks = page.evaluate(
        """() => {
          const marks = performance.getEntriesByType("mark")
            .map((e) => [e.name.replace("sam3-viewer:", ""), e.startTime]);
          const nav = performance.getEntriesByType("navigation")[0];
          return Object.fromEntries([...marks, ["dcl", nav.domContentLoadedEventEnd]]);
        }"""
    )

    # Toggling instance 1, n times; then the minimum score in n steps. Each change is one
    # frame, drawn on requestAnimationFrame; the viewer keeps performance.now() durations.
    # Then the same changes again, each drawn at once with the canvas flushed (getImageData)
    # inside the timing, so that Chromium's rasterisation is counted too.
    measure = """async ([n, what]) => {
      const box = document.querySelector(".sv-list tr[data-number='1'] .sv-on");
      const slider = document.querySelector(".sv-threshold");
      const ctx = document.querySelector(".sv-canvas").getContext("2d");
      const frame = () =>
        new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const canvas = document.querySelector(".sv-canvas");
      const key = (k) =>
        canvas.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true }));
      const change = (i) => {
        if (what === "toggle") box.click();
        else if (what === "pan") key(i % 2 ? "ArrowLeft" : "ArrowRight");
        else if (what === "zoom") key(i % 2 ? "+" : "-");
        else {
          slider.value = ((i % n) / n).toFixed(2);
          slider.dispatchEvent(new Event("input", { bubbles: true }));
        }
      };
      await frame();
      const frames = [];
      const flushed = [];
      const shown = new Set();
      for (let i = 1; i <= n; i++) {
        change(i);
        await frame();
        frames.push(sam3Viewer.frameTimes().at(-1));
        shown.add(sam3Viewer.visible().length);
      }
      for (let i = 1; i <= n; i++) {
        change(i);
        const t0 = performance.now();
        sam3Viewer.redraw();
        ctx.getImageData(0, 0, 1, 1);
        flushed.push(performance.now() - t0);
        await frame();
      }
      return { frames, flushed, shown: shown.size };
    }"""
    zoom = page.evaluate("() => sam3Viewer.view().scale")
    toggles = page.evaluate(measure, [n, "toggle"])
    threshold = page.evaluate(measure, [n, "threshold"])
    # Then at 100% (one image pixel per CSS pixel: the full-resolution photo and crops).
    page.evaluate(
        """() => { const c = document.querySelector(".sv-canvas");
          while (sam3Viewer.view().scale < 1)
            c.dispatchEvent(new KeyboardEvent("keydown", { key: "+", bubbles: true })); }"""
    )
    pans = page.evaluate(measure, [n, "pan"])
    zooms = page.evaluate(measure, [n, "zoom"])
    toggle_frames = toggles["frames"]
    threshold_frames = threshold["frames"]
    page.locator(".sam3-viewer").screenshot(path=str(Path(DATA) / f"viewer-dpr{dpr:g}.png"))
    canvas_px = page.evaluate(
        "() => { const c = document.querySelector('.sv-canvas'); return [c.width, c.height]; }"
    )
    context.close()

    by_url = {rid: urls.get(rid, "") for rid in sizes}
    total = sum(size for rid, size in sizes.items() if not SOURCE_IMAGE.search(by_url[rid]))
    photo = sum(size for rid, size in sizes.items() if SOURCE_IMAGE.search(by_url[rid]))
    crops = sum(size for rid, size in sizes.items() if ".crop.png" in by_url[rid])
    crop_count = sum(1 for rid in sizes if ".crop.png" in by_url[rid])
    data = sum(size for rid, size in sizes.items() if by_url[rid].endswith("viewer.json"))
    overlay = sum(size for rid, size in sizes.items() if by_url[rid].endswith("overlay.png"))
    html = sum(size for rid, size in sizes.items() if by_url[rid].endswith(f"/runs/{run.id}/"))
    static = sum(size for rid, size in sizes.items() if "/static/" in by_url[rid])
    return {
        "ready": ready,
        "marks": marks,
        "toggle": toggle_frames,
        "toggle_flushed": toggles["flushed"],
        "threshold": threshold_frames,
        "threshold_flushed": threshold["flushed"],
        "pan": pans["frames"],
        "pan_flushed": pans["flushed"],
        "zoom_frames": zooms["frames"],
        "zoom_flushed": zooms["flushed"],
        "shown": threshold["shown"],
        "total": total,
        "photo": photo,
        "crops": crops,
        "crop_count": crop_count,
        "data": data,
        "overlay": overlay,
        "html": html,
        "static": static,
        "zoom": zoom,
        "canvas": canvas_px,
    }


def line(label: str, values: list[float]) -> str:
    return (
        f"  {label:<44} median {statistics.median(values):6.2f} ms"
        f"   p95 {pct(values, 0.95):6.2f} ms"
        f"   max {max(values):6.2f} ms   ({len(values)} frames)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--masks", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--dpr", default="1,2", help="device pixel ratios to measure at")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    print(f"sam3web viewer benchmark · data in {DATA}")
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-123")
    run = copied_run(PHOTO, user, args.masks)
    mask_bytes = sum(m.file.size for m in run.masks.all())
    browser_client = Client()
    browser_client.force_login(user)
    cookies = {"sessionid": browser_client.cookies["sessionid"].value}
    instances = server_timings(user, run)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = start_app(port, served_env())
    try:
        crop_px = sum(i["crop"][2] * i["crop"][3] for i in instances)
        full_px = len(instances) * run.image.width * run.image.height
        print(
            f"  pixels the browser decodes for the masks: {crop_px / 1e6:.1f} MP in crops"
            f" instead of {full_px / 1e6:.0f} MP of full-size masks"
            f" ({crop_px * 4 / 2**20:.0f} MiB of RGBA instead of {full_px * 4 / 2**20:.0f} MiB)"
        )
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
            )
            first = True
            for dpr in [float(d) for d in args.dpr.split(",")]:
                r = in_browser(browser, base, cookies, run, dpr, args.repeats)
                w, h = r["canvas"]
                print(
                    f"\nChromium, 1280×900 viewport, device pixel ratio {dpr:g}: canvas {w}×{h}"
                    f" device px, photo drawn at {r['zoom'] * 100:.1f}% (fit),"
                    f" ready {r['ready']:.0f} ms after navigation"
                    + (
                        " (first view: empty browser cache, server cache cold)"
                        if first
                        else " (empty browser cache, server cache warm)"
                    )
                )
                first = False
                m = r["marks"]
                print(
                    "  in the page (ms since navigation): DOMContentLoaded"
                    f" {m['dcl']:.0f} · viewer starts"
                    f" {m['start']:.0f} · viewer.json in {m['data']:.0f} · photo decoded"
                    f" {m['image']:.0f} · all crops drawn {m['ready']:.0f}"
                )
                print(line(f"toggle one instance ({args.repeats}×), draw", r["toggle"]))
                print(line("  … with rasterisation (flushed)", r["toggle_flushed"]))
                print(line(f"minimum score ({args.repeats} steps), draw", r["threshold"]))
                print(line("  … with rasterisation (flushed)", r["threshold_flushed"]))
                print(line(f"pan at 100% zoom ({args.repeats} arrow keys), draw", r["pan"]))
                print(line("  … with rasterisation (flushed)", r["pan_flushed"]))
                print(line(f"zoom in/out around 100% ({args.repeats}×), draw", r["zoom_frames"]))
                print(line("  … with rasterisation (flushed)", r["zoom_flushed"]))
                assert r["shown"] > 1, "the threshold steps hid nothing"
                if dpr == 1:
                    kib = 1024
                    print(
                        f"\nTransferred for the run page, except the photo"
                        f" ({r['photo'] / kib:.0f} KiB): {r['total'] / kib:.1f} KiB"
                    )
                    print(
                        f"  page HTML {r['html'] / kib:.1f} KiB · static files"
                        f" {r['static'] / kib:.1f} KiB · server composite overlay.png"
                        f" {r['overlay'] / kib:.1f} KiB (in <noscript>: not loaded where the"
                        " viewer runs)"
                    )
                    print(
                        f"  viewer mask data: {r['crop_count']} crops {r['crops'] / kib:.1f} KiB"
                        f" + viewer.json {r['data'] / kib:.1f} KiB"
                        f" = {(r['crops'] + r['data']) / kib:.1f} KiB"
                        f"   (the {args.masks} full-size mask PNGs: {mask_bytes / kib:.1f} KiB)"
                    )
            browser.close()
    finally:
        app.terminate()
        app.wait(10)


if __name__ == "__main__":
    main()
