"""What our Runflow client adds on top of one bare HTTP POST of the same create body.

    .venv/bin/python bench/bench_submit_overhead.py [--n 200]

Both sides talk to a Runflow stand-in on 127.0.0.1 and open a new connection for every call,
because that is what the app does: each submit task builds a RunflowClient, makes its calls and
closes it. Both also get a ready SSL context: a bare `httpx.post` would otherwise load the CA
bundle on every call (~20 ms, even for http://), which would drown the figure we care about,
while our client loads it once per process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from runflow_standin import RunflowStandin  # noqa: E402
from segmentation.engines.runflow.client import (  # noqa: E402
    SAM3_MODEL_PATH,
    USER_AGENT,
    RunflowClient,
    build_create_body,
    encode_json,
)
from tests.sample_images import IMAGES  # noqa: E402

CAT = IMAGES / "cat.jpg"
API_KEY = "bench-key"
# One context for the whole run, as our client keeps one per process.
SSL_CONTEXT = httpx.create_ssl_context()


def bare_post_ms(base_url: str, api_key: str, body: bytes, n: int) -> list[float]:
    """Milliseconds for each of `n` bare `httpx.post` calls of `body` to the create endpoint,
    each on a new connection, with the headers our client sends (a fresh Idempotency-Key each
    time, so every call creates a run, as a submit does)."""
    url = base_url.rstrip("/") + SAM3_MODEL_PATH
    times = []
    for _ in range(n):
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": str(uuid.uuid4()),
        }
        start = time.perf_counter()
        response = httpx.post(url, content=body, headers=headers, verify=SSL_CONTEXT, timeout=30)
        response.raise_for_status()
        response.json()
        times.append((time.perf_counter() - start) * 1000)
    return times


def client_create_ms(base_url: str, api_key: str, input: dict[str, Any], n: int) -> list[float]:
    """Milliseconds for each of `n` RunflowClient.create_run calls with fresh idempotency keys,
    counting the client's construction and close as a submit task does (one client per task)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        with RunflowClient(base_url=base_url, api_key=api_key) as client:
            client.create_run(input=input, idempotency_key=str(uuid.uuid4()))
        times.append((time.perf_counter() - start) * 1000)
    return times


def cat_input() -> dict[str, Any]:
    """A realistic SAM 3 input: cat.jpg inline as a data: URI, as the app sends small images."""
    from segmentation.imaging.intake import data_uri

    return {
        "image_url": data_uri(CAT.read_bytes(), "image/jpeg"),
        "prompt": "cat",
        "include_scores": True,
        "include_boxes": True,
    }


def describe(label: str, times: list[float]) -> str:
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
    return (
        f"{label:<52} median {statistics.median(times):7.2f} ms   p90 {p90:7.2f} ms   "
        f"mean {statistics.fmean(times):7.2f} ms"
    )


def encode_ms(input: dict[str, Any], n: int) -> list[float]:
    """Milliseconds to build and encode the create body, work the bare POST is spared (it gets
    the bytes ready-made) and the client does on every call."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        encode_json(build_create_body(input=input))
        times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="timed calls per figure")
    parser.add_argument("--rounds", type=int, default=10, help="alternate the two this many times")
    args = parser.parse_args(argv)

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sam3web.settings")
    django.setup()

    sam3_input = cat_input()
    body = encode_json(build_create_body(input=sam3_input))
    per_round = max(1, args.n // args.rounds)
    bare: list[float] = []
    ours: list[float] = []
    with RunflowStandin(api_keys=[API_KEY]) as standin:
        print(
            f"Runflow stand-in at {standin.base_url}; cat.jpg {CAT.stat().st_size:,} bytes, "
            f"create body {len(body):,} bytes; {per_round * args.rounds} calls each"
        )
        # Warm up both paths, then alternate them in rounds so that drift in the machine's
        # speed (other processes, CPU frequency) falls on both alike.
        bare_post_ms(standin.base_url, API_KEY, body, 5)
        client_create_ms(standin.base_url, API_KEY, sam3_input, 5)
        for _ in range(args.rounds):
            standin.reset()  # each round starts from an empty stand-in
            bare += bare_post_ms(standin.base_url, API_KEY, body, per_round)
            ours += client_create_ms(standin.base_url, API_KEY, sam3_input, per_round)

    print(describe("bare httpx.post (new connection per call)", bare))
    print(describe("RunflowClient.create_run (new client per call)", ours))
    print(describe("  of which building + encoding the body", encode_ms(sam3_input, per_round)))
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"client / bare (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
