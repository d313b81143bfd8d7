"""Callback figures, against the app served by gunicorn (as bin/serve runs it) on SQLite:

- callback handling time p50/p99 and sustained callbacks per second, 2 concurrent clients;
- time from the Runflow stand-in sending a callback to the run's status fragment showing
  "Succeeded".

    .venv/bin/python bench/bench_callbacks.py [--callbacks 400] [--latency-runs 20]

Runs against a throwaway data folder, never the app's own."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import free_port, pct, start_gunicorn, throwaway_django  # noqa: E402
from sam3web import gunicorn_conf  # noqa: E402
from tests.sample_images import IMAGES  # noqa: E402

DATA = throwaway_django()

import httpx  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from runflow_standin import RunflowStandin  # noqa: E402
from segmentation.engines.runflow.callbacks import callback_token  # noqa: E402
from segmentation.engines.runflow.client import RunflowClient  # noqa: E402
from segmentation.imaging.intake import intake_bytes  # noqa: E402
from segmentation.imaging.store import store_image  # noqa: E402
from segmentation.models import Run  # noqa: E402


def start_app(port: int, public_url: str) -> subprocess.Popen:
    return start_gunicorn(port, {**os.environ, "SAM3WEB_PUBLIC_URL": public_url})


def callback_body(provider_id: str) -> bytes:
    return json.dumps(
        {
            "event": "run.completed",
            "run_id": provider_id,
            "status": "succeeded",
            "output": {
                "model_data": {
                    "masks": [{"url": "https://files.example/m.png", "width": 451, "height": 300}],
                    "scores": [0.9],
                    "boxes": [[0.5, 0.5, 0.2, 0.2]],
                }
            },
            "duration_ms": 1500,
            "created_at": "2026-11-24T06:00:00+00:00",
            "completed_at": "2026-11-24T06:00:01.500000+00:00",
            "metadata": None,
        }
    ).encode()


def throughput(base: str, runs: list[Run]) -> None:
    halves = [runs[0::2], runs[1::2]]
    latencies: list[list[float]] = [[], []]

    def client(n: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            for run in halves[n]:
                url = f"/callbacks/runflow/{run.id}/{callback_token(run.id)}/"
                start = time.perf_counter()
                response = http.post(
                    url,
                    content=callback_body(run.provider_run_id),
                    headers={"Content-Type": "application/json"},
                )
                latencies[n].append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, response.text

    threads = [threading.Thread(target=client, args=(n,)) for n in (0, 1)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    every = latencies[0] + latencies[1]
    applied = Run.objects.filter(status=Run.Status.SUCCEEDED).count()
    shape = f"{gunicorn_conf.workers}×{gunicorn_conf.threads} threads"
    print(f"Callbacks, 2 concurrent clients, {len(every)} runs (gunicorn {shape}, SQLite):")
    print(f"  handling time  p50 {pct(every, 0.5):6.1f} ms   p99 {pct(every, 0.99):6.1f} ms")
    print(f"  sustained      {len(every) / wall:6.0f} callbacks/s   ({applied} applied, none lost)")


def fragment_latency(base: str, user, repeats: int) -> None:
    """The stand-in finishes a run and POSTs its callback; a reader polls the status fragment
    as fast as it can; the figure is callback sent → fragment says Succeeded."""
    browser = Client()
    browser.force_login(user)
    cookies = {"sessionid": browser.cookies["sessionid"].value}
    first = Run.objects.first()
    assert first is not None, "main() creates the runs before measuring"
    image = first.image
    found: list[float] = []
    with (
        RunflowStandin(api_keys=["bench-key"]) as standin,
        httpx.Client(base_url=base, cookies=cookies, timeout=10) as reader,
        RunflowClient(base_url=standin.base_url, api_key="bench-key") as runflow,
    ):
        standin.callback_backoff = (0.05, 0.05)
        for _ in range(repeats):
            run = Run.objects.create(owner=user, image=image, input={"prompt": "cat"})
            created = runflow.create_run(
                input={"image_url": "https://images.example/cat.jpg", "prompt": "cat"},
                idempotency_key=str(run.id),
                client_ref=str(run.id),
                callback_url=f"{base}/callbacks/runflow/{run.id}/{callback_token(run.id)}/",
            )
            Run.objects.filter(pk=run.pk).update(
                status=Run.Status.RUNNING, provider_run_id=created["id"]
            )
            sent_before = len(standin.callbacks)
            standin.finish(created["id"])
            while True:
                html = reader.get(f"/runs/{run.id}/status/").text
                if "badge-succeeded" in html:
                    seen = time.monotonic()
                    break
            attempt = standin.callbacks[sent_before]
            found.append((seen - attempt.time) * 1000)
    print("\nCallback sent by the stand-in → status fragment shows Succeeded:")
    print(
        f"  median {statistics.median(found):6.1f} ms   p95 {pct(found, 0.95):6.1f} ms"
        f"   ({repeats} runs; the run page's long poll hears of it within 25 ms:"
        " bench_latency.py measures what a person waits for)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--callbacks", type=int, default=400)
    parser.add_argument("--latency-runs", type=int, default=20)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-123")
    image = store_image(intake_bytes((IMAGES / "cat.jpg").read_bytes()), original_name="cat.jpg")
    runs = [
        Run.objects.create(
            owner=user,
            image=image,
            input={"prompt": "cat"},
            status=Run.Status.RUNNING,
            provider_run_id=f"prov-{n}",
        )
        for n in range(args.callbacks)
    ]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = start_app(port, public_url=base)
    try:
        print(f"sam3web callback benchmark · data in {DATA}\n")
        throughput(base, runs)
        fragment_latency(base, user, args.latency_runs)
    finally:
        app.terminate()
        app.wait(10)


if __name__ == "__main__":
    main()
