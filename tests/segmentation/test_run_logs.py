"""One run followed by its id through the logs of every process it passes: the web request that
makes it, the worker that sends it, Runflow's callback, the worker that copies its masks. Each
step is one line, "run=<id> event=<name> key=value...", and no line carries an input or a
secret."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from django.test import Client

from segmentation.engines.runflow.callbacks import callback_token
from segmentation.models import Run
from tests.factories import TEST_KEY, callback_payload, submit, worker_until_idle

pytestmark = pytest.mark.django_db(transaction=True)


def events(text: str, run: Run) -> list[str]:
    """The events of this run, in order, from log text."""
    return re.findall(rf"run={run.pk} event=(\w+)", text)


def test_a_run_is_followed_through_web_worker_and_callback(
    signed_in: Client, standin: Any, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    caplog.set_level(logging.INFO)
    run = submit(signed_in, prompt="a secret prompt")  # the web process
    assert events(caplog.text, run) == ["created"]
    assert f"run={run.pk} event=created via=web owner={run.owner_id}" in caplog.text

    sent = worker_until_idle(standin)  # a worker process, logging on its stderr
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED and run.provider_run_id
    assert events(sent.stderr, run)[0] == "submit"
    line = next(line for line in sent.stderr.splitlines() if f"run={run.pk} event=submit" in line)
    assert "outcome=submitted attempt=1" in line
    # Each line names its process, as several web and worker processes write to one journal.
    assert re.search(r" MainProcess\[\d+\] segmentation\.tasks: run=", line), line

    finished = standin.finish(run.provider_run_id)
    body = callback_payload(run_id=run.provider_run_id, output=finished["output"])
    caplog.clear()
    answer = Client().post(
        f"/callbacks/runflow/{run.pk}/{callback_token(run.pk)}/",
        json.dumps(body),
        content_type="application/json",
    )
    assert answer.status_code == 200
    assert events(caplog.text, run) == ["callback"]
    assert "outcome=applied http_status=200 provider_status=succeeded" in caplog.text

    copied = worker_until_idle(standin)
    assert "copied" in events(copied.stderr, run)
    assert re.search(
        rf"run={run.pk} event=copied artifacts=done masks=\d+ missing=0", copied.stderr
    )

    everything = caplog.text + sent.stderr + copied.stderr
    assert "a secret prompt" not in everything
    assert TEST_KEY not in everything and callback_token(run.pk) not in everything
