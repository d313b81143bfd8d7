"""Submit path figures: form POST to run stored + task enqueued, and the submit task against
the Runflow stand-in compared with a bare httpx POST of the same body.

    .venv/bin/python bench/bench_submit.py [--repeat 30]

Runs against a throwaway data folder (SQLite database and media), never the app's own."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import pct, throwaway_django  # noqa: E402
from tests.sample_images import IMAGES  # noqa: E402

throwaway_django()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from bench.bench_submit_overhead import bare_post_ms  # noqa: E402
from runflow_standin import RunflowStandin  # noqa: E402
from segmentation.engines.runflow import client as runflow  # noqa: E402
from segmentation.imaging.intake import data_uri  # noqa: E402
from segmentation.models import Run  # noqa: E402
from segmentation.tasks import submit_run  # noqa: E402


def post_form_ms(client: Client, name: str, repeat: int) -> list[float]:
    data = (IMAGES / name).read_bytes()
    times = []
    for n in range(repeat):
        # Vary the prompt only: the image is the same upload each time, as a person re-running.
        fields = {
            "image": SimpleUploadedFile(name, data),
            "prompt": f"thing {n}",
            "include_scores": "on",
            "include_boxes": "on",
            "max_masks": "3",
            "output_format": "png",
        }
        start = time.perf_counter()
        response = client.post("/runs/new/", fields)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 302, response.content[:500]
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    repeat = parser.parse_args().repeat

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-123")
    client = Client()
    client.force_login(user)
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.RUNFLOW_API_KEY = "bench-key"  # the form refuses to store runs without one

    print(f"sam3web submit benchmark · {repeat} repeats · medians\n")
    print("Form POST → run stored and submit task enqueued (in-process, real view, SQLite):")
    for name in ("cat.jpg", "large-4032x3024.jpg"):
        post_form_ms(client, name, 3)  # warm up
        times = post_form_ms(client, name, repeat)
        size = (IMAGES / name).stat().st_size / 1024
        print(
            f"  {name:<22} {size:7.0f} KiB   median {statistics.median(times):7.1f} ms"
            f"   p95 {pct(times, 0.95):7.1f} ms"
        )

    with RunflowStandin(api_keys=["bench-key"]) as standin:
        settings.RUNFLOW_BASE_URL = standin.base_url
        settings.RUNFLOW_API_KEY = "bench-key"
        Run.objects.all().delete()
        post_form_ms(client, "cat.jpg", repeat + 3)
        run_ids = [str(pk) for pk in Run.objects.values_list("pk", flat=True)]

        task_ms = []
        for run_id in run_ids:
            start = time.perf_counter()
            assert submit_run.call(run_id) == "submitted"
            task_ms.append((time.perf_counter() - start) * 1000)
        task_ms = task_ms[3:]

        # The same body the task sent, posted bare: the physical minimum for this request.
        run = Run.objects.get(pk=run_ids[0])
        body_input = {
            **run.input,
            "image_url": data_uri((IMAGES / "cat.jpg").read_bytes(), "image/jpeg"),
        }
        body = runflow.build_create_body(input=body_input, client_ref=str(run.pk))
        bare = bare_post_ms(standin.base_url, "bench-key", runflow.encode_json(body), repeat)

    task, minimum = statistics.median(task_ms), statistics.median(bare)
    print("\nSubmit task (cat.jpg inline, stand-in answering at once):")
    print(f"  submit task               median {task:7.1f} ms   p95 {pct(task_ms, 0.95):7.1f} ms")
    print(f"  bare httpx POST, same body median {minimum:6.1f} ms   p95 {pct(bare, 0.95):7.1f} ms")
    print(f"  ratio task / bare POST    {task / minimum:.2f}×")


if __name__ == "__main__":
    main()
