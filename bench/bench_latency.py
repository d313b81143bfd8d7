"""Submit → masks drawn, as a person feels it, in Chromium:

- the app as bin/serve runs it (gunicorn with sam3web/gunicorn_conf.py, collected static files,
  `manage.py worker` in a process of its own) on a throwaway data folder;
- the Runflow stand-in answering at once (runs finish the moment they are created);
- a signed-in Chromium page: the new-run form with cat.jpg and the text prompt "cat" (several
  masks), then the clock runs from the click on Submit until the run page's viewer has drawn
  the masks (every mask loaded, two animation frames later);
- with callbacks (the stand-in calls the app back) and with polling (no public URL);
- printed: median and p95 of the repeats, and where the median run's time went (the form's
  POST and the run page, the worker picking the run up and sending it, the result reaching the
  app, the masks copied, the page learning of it and drawing).

    .venv/bin/python bench/bench_latency.py [--repeats 10] [--as-before]

--as-before runs the same clicks with the previous way of waiting: a worker that looks for
work every second, a first poll after 2 s, and the page polling every second (no long poll)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, free_port, pct, start_gunicorn, throwaway_django  # noqa: E402
from tests.sample_images import IMAGES  # noqa: E402

DATA = throwaway_django(static_manifest=True)

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from runflow_standin import RunflowStandin  # noqa: E402
from segmentation.models import Run  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PHOTO = IMAGES / "cat.jpg"
RUN_PAGE = re.compile(r"/runs/([0-9a-f-]{36})/$")
DRAWN_JS = """async () => {
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return Date.now();
}"""


def run_mode(browser, mode: str, repeats: int, as_before: bool) -> list[dict[str, float]]:
    secret = "bench-secret"
    standin = RunflowStandin(api_keys=["k"]).start()
    standin.complete_after = 0.0
    standin.callback_secret = secret
    standin.callback_backoff = (0.1, 0.1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SAM3WEB_DATA_DIR": DATA,
        "SAM3WEB_STATIC_MANIFEST": "1",
        "RUNFLOW_BASE_URL": standin.base_url,
        "RUNFLOW_API_KEY": "k",
        "RUNFLOW_CALLBACK_SECRET": secret,
    }
    if mode == "callbacks":
        env["SAM3WEB_PUBLIC_URL"] = url
    worker_args = ["--no-startup-delay", "--interval", os.environ.get("BENCH_INTERVAL", "0.05")]
    if as_before:
        env["SAM3WEB_POLL_FIRST"] = "2"
        worker_args += ["--interval", "1"]
    web = start_gunicorn(port, env)
    worker = subprocess.Popen(
        [str(ROOT / ".venv/bin/python"), "manage.py", "worker", "--", *worker_args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    if as_before:
        # The page without its long poll: htmx's one-second poll does the asking.
        page.route("**/status/?*wait=1*", lambda route: route.abort())
    try:
        page.goto(f"{url}/accounts/login/")
        page.get_by_label("Username").fill("bench")
        page.get_by_label("Password").fill("bench password 1")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/runs/")
        samples = []
        for i in range(repeats + 1):  # the first one warms the caches up and is not counted
            page.goto(f"{url}/runs/new/")
            page.get_by_label("Image", exact=True).set_input_files(str(PHOTO))
            page.get_by_label("Text prompt").fill("cat")
            multiple = page.get_by_label("Return multiple masks")
            if not multiple.is_checked():
                multiple.check()
            page.wait_for_timeout(300)  # the preview is drawn: the person is ready to click
            clicked = page.evaluate("Date.now()")
            page.get_by_role("button", name="Submit run").click()
            page.wait_for_url(RUN_PAGE)
            page.wait_for_function("() => window.sam3Viewer && window.sam3Viewer.ready()")
            drawn = page.evaluate(DRAWN_JS)
            if i == 0:
                continue
            found = RUN_PAGE.search(page.url)
            assert found, page.url
            run = Run.objects.get(pk=found.group(1))
            assert run is not None and run.status == Run.Status.SUCCEEDED, (
                run,
                run and run.error_message,
            )
            ms = lambda t: t.timestamp() * 1000  # noqa: E731
            last_copy = max(m.copied_at for m in run.masks.all() if m.copied_at)
            samples.append(
                {
                    "total": drawn - clicked,
                    "runflow": float(run.duration_ms or 0),
                    "over": drawn - clicked - float(run.duration_ms or 0),
                    "form": ms(run.created_at) - clicked,
                    "submitted": ms(run.submitted_at) - ms(run.created_at),
                    "result": ms(run.completed_at) - ms(run.submitted_at),
                    "copied": ms(last_copy) - ms(run.completed_at),
                    "drawn": drawn - ms(last_copy),
                    "source": run.result_source,
                }
            )
        return samples
    finally:
        context.close()
        worker.terminate()
        web.terminate()
        worker.wait(10)
        web.wait(10)
        standin.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--as-before", action="store_true")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    call_command("migrate", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    get_user_model().objects.create_user("bench", password="bench password 1")
    label = "as before" if args.as_before else "now"
    print(f"Submit → masks drawn in Chromium, stand-in answering at once ({label}):")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for mode in ("callbacks", "polling"):
                samples = run_mode(browser, mode, args.repeats, args.as_before)
                totals = [s["total"] for s in samples]
                over = [s["over"] for s in samples]
                middle = sorted(samples, key=lambda s: s["total"])[len(samples) // 2]
                print(
                    f"  {mode:9}  median {statistics.median(totals):5.0f} ms  "
                    f"p95 {pct(totals, 0.95):5.0f} ms  (n={len(totals)}, result by "
                    f"{middle['source']})"
                )
                print(
                    f"             beyond the stand-in's own run time "
                    f"({statistics.median(s['runflow'] for s in samples):.0f} ms, its "
                    f"duration_ms): median {statistics.median(over):.0f} ms, "
                    f"p95 {pct(over, 0.95):.0f} ms"
                )
                print(
                    f"             the median run: form and redirect {middle['form']:.0f} ms, "
                    f"worker sends it {middle['submitted']:.0f} ms, result stored "
                    f"{middle['result']:.0f} ms, masks copied {middle['copied']:.0f} ms, "
                    f"overlay, page told and masks drawn {middle['drawn']:.0f} ms"
                )
        finally:
            browser.close()
    shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
