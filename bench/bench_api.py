"""The team's API (/v1/) under load, against the app served as bin/serve runs it (gunicorn with
sam3web/gunicorn_conf.py, `manage.py worker` in a process of its own, the Runflow stand-in in
a third, finishing runs at once) on a throwaway data folder and SQLite:

- (a) create latency: POST /v1/models/meta/sam-3/image/runs through sam3web, cat.jpg inline
  as a data: URI, against the same body POSTed straight to the stand-in (one run each,
  sequential, kept-alive connections): medians, p95 and their ratio;
- (b) sustained creates per second with 8 concurrent clients for 10 s (the rate limit set out
  of the way: SAM3WEB_API_RATE_PER_MINUTE);
- (c) the budget under that load: a teammate whose monthly budget pays for exactly K runs,
  8 concurrent clients firing many creates at once: how many 201s and 402s, and a check that
  exactly K runs were made (no overshoot, none lost).

    .venv/bin/python bench/bench_api.py [--repeat 30] [--seconds 10] [--clients 8]
        [--budget-runs 40]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    ROOT,
    answering,
    free_port,
    pct,
    served_env,
    start_gunicorn,
    throwaway_django,
)
from sam3web import gunicorn_conf  # noqa: E402
from tests.sample_images import IMAGES  # noqa: E402

DATA = throwaway_django(static_manifest=True)

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from accounts import budgets  # noqa: E402
from accounts.models import ApiToken, Profile  # noqa: E402
from segmentation.imaging.intake import data_uri  # noqa: E402
from segmentation.models import Run  # noqa: E402

SAM3_PATH = "/v1/models/meta/sam-3/image/runs"
STANDIN_KEY = "bench-key"


def body(n: int) -> dict:
    """The model page's body, cat.jpg inline; the prompt varies so no two bodies are equal."""
    return {
        "input": {
            "prompt": f"cat {n}",
            "image_url": data_uri((IMAGES / "cat.jpg").read_bytes(), "image/jpeg"),
            "apply_mask": False,
            "return_multiple_masks": True,
        }
    }


def start_standin(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runflow_standin",
            "--port",
            str(port),
            "--key",
            STANDIN_KEY,
            "--quiet",
            "--complete-after",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return answering(proc, f"http://127.0.0.1:{port}/v1/auth/me", "the stand-in")


def post_ms(client: httpx.Client, url: str, n: int) -> float:
    start = time.perf_counter()
    response = client.post(url, json=body(n))
    elapsed = (time.perf_counter() - start) * 1000
    assert response.status_code == 201, response.text[:500]
    return elapsed


def latency(app: str, standin: str, token: str, repeat: int) -> None:
    with (
        httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as ours,
        httpx.Client(headers={"Authorization": f"Bearer {STANDIN_KEY}"}, timeout=60) as theirs,
    ):
        for n in range(3):  # warm up both
            post_ms(ours, app + SAM3_PATH, n)
            post_ms(theirs, standin + SAM3_PATH, n)
        via, direct = [], []
        for n in range(repeat):  # interleaved: both see the same machine at the same moment
            via.append(post_ms(ours, app + SAM3_PATH, 100 + n))
            direct.append(post_ms(theirs, standin + SAM3_PATH, 100 + n))
    m_via, m_direct = statistics.median(via), statistics.median(direct)
    print(
        f"(a) Create latency, cat.jpg inline ({len(body(0)['input']['image_url']) // 1024} KiB "
        f"data: URI), {repeat} runs each, sequential:"
    )
    print(f"    through sam3web      median {m_via:6.1f} ms   p95 {pct(via, 0.95):6.1f} ms")
    print(f"    straight to stand-in median {m_direct:6.1f} ms   p95 {pct(direct, 0.95):6.1f} ms")
    print(f"    ratio sam3web / stand-in  {m_via / m_direct:.2f}×")


def hammer(
    url: str, token: str, clients: int, *, seconds: float | None = None, each: int | None = None
) -> tuple[collections.Counter, list[float], float]:
    """``clients`` threads POSTing creates, for ``seconds`` or ``each`` requests apiece, all
    released at once. Returns the status counts, the latencies (ms) and the wall time."""
    counts: collections.Counter = collections.Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    start_line = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(c: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            start_line.wait()
            n = 0
            while (each is None or n < each) and (seconds is None or time.monotonic() < stop_at[0]):
                began = time.perf_counter()
                status: int | str
                try:
                    status = http.post(url, json=body(c * 100_000 + n)).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                ms = (time.perf_counter() - began) * 1000
                with lock:
                    counts[status] += 1
                    latencies.append(ms)
                n += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + (seconds or 0)
    start = time.perf_counter()
    start_line.wait()
    for t in threads:
        t.join()
    return counts, latencies, time.perf_counter() - start


def sustained(app: str, token: str, clients: int, seconds: float) -> None:
    counts, latencies, wall = hammer(app + SAM3_PATH, token, clients, seconds=seconds)
    made = counts[201]
    shape = f"{gunicorn_conf.workers}×{gunicorn_conf.threads} threads"
    print(
        f"\n(b) Sustained creates, {clients} concurrent clients for {wall:.1f} s "
        f"(gunicorn {shape}, SQLite, the worker sending them meanwhile):"
    )
    print(
        f"    {made / wall:6.1f} creates/s   ({made} runs made)   "
        f"latency p50 {pct(latencies, 0.5):6.1f} ms   p99 {pct(latencies, 0.99):6.1f} ms"
    )
    others = {k: v for k, v in counts.items() if k != 201}
    print(f"    other answers: {dict(others) if others else 'none'}")


def budget_race(app: str, clients: int, runs: int) -> None:
    user = get_user_model().objects.create_user("tight", password="bench password 2")
    profile = Profile.of(user)
    profile.monthly_budget = runs * settings.SAM3WEB_PRICE_PER_IMAGE
    assert profile.monthly_budget == profile.monthly_budget.quantize(Decimal("0.01")), (
        "the budget column has cents: give an even number of runs"
    )
    profile.save(update_fields=["monthly_budget"])
    profile.refresh_from_db()  # as stored: dollars and cents
    _row, token = ApiToken.issue(user, "bench")
    each = max(3, (3 * runs) // clients)
    counts, latencies, wall = hammer(app + SAM3_PATH, token, clients, each=each)
    others = {k: v for k, v in counts.items() if k not in (201, 402)}
    made = Run.objects.filter(owner=user).count()
    spent = budgets.spent(user)
    print(
        f"\n(c) Budget for exactly {runs} runs (${profile.monthly_budget}), {clients} concurrent "
        f"clients, {clients * each} creates fired at once ({wall:.1f} s):"
    )
    print(
        f"    201 Created: {counts[201]}   402 Insufficient credit: {counts[402]}   "
        f"other: {others or 'none'}"
    )
    print(
        f"    runs in the database: {made}   spent ${spent} of ${profile.monthly_budget}   "
        f"latency p50 {pct(latencies, 0.5):.1f} ms  p99 {pct(latencies, 0.99):.1f} ms"
    )
    assert counts[201] == runs, f"{counts[201]} runs made for a budget of {runs}"
    assert made == runs, f"{made} runs stored for a budget of {runs}"
    assert counts[402] == clients * each - runs - sum(others.values())
    assert spent <= profile.monthly_budget
    print("    no overshoot: exactly the runs the budget pays for were made")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--budget-runs", type=int, default=40)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench password 1")
    _row, token = ApiToken.issue(user, "bench")

    standin_port, port = free_port(), free_port()
    standin_url, app_url = f"http://127.0.0.1:{standin_port}", f"http://127.0.0.1:{port}"
    env = {
        **served_env(),
        "SAM3WEB_DATA_DIR": DATA,
        "RUNFLOW_BASE_URL": standin_url,
        "RUNFLOW_API_KEY": STANDIN_KEY,
        # The rate limit (120 a minute by default) would otherwise be what is measured.
        "SAM3WEB_API_RATE_PER_MINUTE": "1000000",
    }
    standin = start_standin(standin_port)
    web = start_gunicorn(port, env)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "worker", "--", "--no-startup-delay"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        print(f"sam3web API benchmark · data in {DATA} · {os.cpu_count()} CPUs\n")
        latency(app_url, standin_url, token, args.repeat)
        sustained(app_url, token, args.clients, args.seconds)
        budget_race(app_url, args.clients, args.budget_runs)
    finally:
        for proc in (worker, web, standin):
            proc.terminate()
        for proc in (worker, web, standin):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
