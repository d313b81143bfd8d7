"""Runs made through the API, as the browser shows them: marked "API" with their token's name
in the history and on the run page, whose Details list every callback sent to the caller
with each attempt (sent for real, by the API's sender, to a receiver on this machine)."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from decimal import Decimal
from html import unescape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken
from api import callbacks
from segmentation.models import CallerCallback, Run
from tests.factories import make_run

pytestmark = pytest.mark.django_db


def text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def part(pattern: str, html: str) -> str:
    """The first piece of the page that matches (failing the test when none does)."""
    found = re.search(pattern, html, re.S)
    assert found, f"nothing matches {pattern!r}"
    return found[0]


@pytest.fixture
def laptop(owner) -> ApiToken:
    row, _raw = ApiToken.issue(owner, "laptop")
    return row


def api_run(owner, token: ApiToken, **fields) -> Run:
    """A finished run as the API leaves one: its token, the caller's reference and URLs."""
    return make_run(
        owner,
        token=token,
        client_ref="batch-7/photo-12",
        base_url="http://testserver",
        **fields,
    )


# --- the history and the run page ----------------------------------------------------------------


def test_the_history_marks_api_runs_with_their_token(
    signed_in: Client, owner, laptop, django_assert_max_num_queries
) -> None:
    made = api_run(owner, laptop)
    browser = make_run(owner)
    with django_assert_max_num_queries(8):  # the token comes with the run, not one query each
        html = signed_in.get("/runs/").content.decode()
    card = part(rf'id="run-{made.pk}".*?</div>\s*</div>', html)
    assert "API · laptop" in text(card)
    assert 'title="Made through the API with the token “laptop”"' in card
    other = part(rf'id="run-{browser.pk}".*?</div>\s*</div>', html)
    assert "API" not in text(other)


def test_the_run_page_says_which_token_made_it(signed_in: Client, owner, laptop) -> None:
    run = api_run(owner, laptop, callback_url="https://hooks.example.com/sam3")
    page = text(signed_in.get(f"/runs/{run.pk}/").content.decode())
    assert "Made by ada through the API · laptop" in page
    assert f"Made through the API, with ada’s token “laptop” ( {laptop.hint}… )" in page
    assert "Caller’s reference batch-7/photo-12" in page
    assert "Callback URL https://hooks.example.com/sam3" in page

    ApiToken.objects.filter(pk=laptop.pk).update(revoked_at=timezone.now())
    page = text(signed_in.get(f"/runs/{run.pk}/").content.decode())
    assert f"( {laptop.hint}… ), since revoked" in page


def test_a_browser_run_says_nothing_of_the_api(signed_in: Client, owner) -> None:
    run = make_run(owner)
    page = text(signed_in.get(f"/runs/{run.pk}/").content.decode())
    assert "through the API" not in page and "Callbacks to the caller" not in page


# --- callbacks to the caller ---------------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """A caller's callback receiver on 127.0.0.1: answers each POST with the next status."""

    daemon_threads = True

    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.statuses = statuses
        self.bodies: list[bytes] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Answer(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        self.server.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(self.server.statuses.pop(0))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:
    settings.SAM3WEB_FETCH_ALLOW_PRIVATE = True  # the receiver lives on 127.0.0.1
    server = Receiver([503, 200])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_details_list_every_callback_and_attempt(
    signed_in: Client, owner, laptop, receiver: Receiver
) -> None:
    run = api_run(owner, laptop, callback_url=receiver.url, cost=Decimal("0.005"))
    # As the API's sender does it: stored with its body, then sent; the receiver answers
    # 503 first (tried again), then 200.
    sent = callbacks.queue(run, key="succeeded")
    assert sent is not None
    callbacks.send_caller_callback.call(sent.pk)
    callbacks.send_caller_callback.call(sent.pk)
    sent.refresh_from_db()
    assert sent.state == CallerCallback.State.DELIVERED and len(receiver.bodies) == 2
    # A second one, asked for again by the caller, to a port nobody listens on.
    closed = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    dead_url = f"http://127.0.0.1:{closed.server_address[1]}/hook"
    closed.server_close()
    Run.objects.filter(pk=run.pk).update(callback_url=dead_url)
    run.refresh_from_db()
    again = callbacks.redeliver(run)
    callbacks.send_caller_callback.call(again.pk)

    html = signed_in.get(f"/runs/{run.pk}/").content.decode()
    assert "callbacks to the caller" in text(html)
    table = part(r'<table class="deliveries caller-callbacks">.*?</table>', html)
    first = text(part(rf'id="caller-callback-{sent.pk}".*?</tr>', table))
    assert "run.completed" in first and receiver.url in first and "Delivered" in first
    attempts = [dict(a) for a in CallerCallback.objects.get(pk=sent.pk).attempts]
    assert [a["http_status"] for a in attempts] == [503, 200]
    for attempt in attempts:
        at = timezone.localtime(dt.datetime.fromisoformat(attempt["at"]))
        assert f"{at:%H:%M:%S} · HTTP {attempt['http_status']} · {attempt['ms']} ms" in first

    second = text(part(rf'id="caller-callback-{again.pk}".*?</tr>', table))
    assert "(asked for again)" in second and dead_url in second
    [attempt] = CallerCallback.objects.get(pk=again.pk).attempts
    assert attempt["http_status"] is None and attempt["error"]
    assert f"{attempt['error']} · {attempt['ms']} ms" in second
    assert "Sending" in second  # it will be tried again


def test_a_callback_not_tried_yet_says_so(signed_in: Client, owner, laptop) -> None:
    run = api_run(owner, laptop, callback_url="https://hooks.example.com/sam3")
    queued = callbacks.queue(run, key="succeeded")
    assert queued is not None
    html = signed_in.get(f"/runs/{run.pk}/").content.decode()
    row = text(part(rf'id="caller-callback-{queued.pk}".*?</tr>', html))
    assert "Sending" in row and "none yet" in row
