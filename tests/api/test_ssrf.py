"""Image and callback URLs reach public addresses only, unless an admin names a private host,
address or network in SAM3WEB_OUTBOUND_ALLOW (a pipeline on the team's own network); cloud
metadata addresses stay refused even inside an allowed network."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from segmentation.models import Run
from tests.api.conftest import SAM3_PATH, body
from tests.image_server import ImageServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture
def post(client: Client, token: str, standin) -> Any:
    def post(**fields: Any) -> Any:
        payload = body()
        payload["input"].update(fields.pop("input", {}))
        payload.update(fields)
        return client.post(
            SAM3_PATH,
            data=json.dumps(payload),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    return post


def image_refused(response: Any, runs: int = 0) -> str:
    assert response.status_code == 422, response.content[:300]
    error = response.json()["errors"][0]
    assert error["loc"] == ["input", "image_url"]
    assert Run.objects.count() == runs
    return str(error["msg"])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/images/cat.jpg",
        "http://localhost:{port}/images/cat.jpg",
        "http://[::1]:{port}/images/cat.jpg",
        "http://10.0.0.1/cat.jpg",
        "http://192.168.1.10/cat.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/cat.jpg",
        "http://0x7f000001:{port}/images/cat.jpg",
    ],
)
def test_an_image_url_at_a_private_address_is_refused(
    post, server: ImageServer, connections: list, url: str
) -> None:
    msg = image_refused(post(input={"image_url": url.format(port=server.port)}))
    assert "private or local network" in msg
    assert connections == []
    assert server.requests == []


@pytest.mark.parametrize(
    "target", ["http://10.0.0.1/cat.jpg", "http://169.254.169.254/", "http://127.0.0.2:{port}/"]
)
def test_an_image_url_redirecting_to_a_private_address_is_refused(
    post, server: ImageServer, settings, connections: list, target: str
) -> None:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]  # the image server itself, nothing else
    hop = server.url(f"/redirect?to={target.format(port=server.port)}")
    msg = image_refused(post(input={"image_url": hop}))
    assert "private or local network" in msg
    assert connections == [("127.0.0.1", server.port)]


def test_an_allowed_address_lets_an_image_through(post, server: ImageServer, settings) -> None:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]
    response = post(input={"image_url": server.url("/images/cat.jpg")})
    assert response.status_code == 201, response.content
    assert response.json()["input"]["image_url"] == server.url("/images/cat.jpg")


def test_an_allowed_host_name_lets_its_private_addresses_through(
    post, server: ImageServer, settings
) -> None:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["localhost"]
    assert (
        post(input={"image_url": server.url("/images/cat.jpg", host="localhost")}).status_code
        == 201
    )
    # The host name is what is allowed, not the address it happens to have.
    image_refused(post(input={"image_url": server.url("/images/coffee.jpg")}), runs=1)


def test_an_allowed_network_lets_its_addresses_through(post, server: ImageServer, settings) -> None:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.0/8"]
    assert post(input={"image_url": server.url("/images/cat.jpg")}).status_code == 201


def test_metadata_addresses_stay_refused_inside_an_allowed_network(
    post, settings, connections: list
) -> None:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["169.254.0.0/16", "fd00::/8"]
    msg = image_refused(post(input={"image_url": "http://169.254.169.254/latest/meta-data/"}))
    assert "private or local network" in msg
    refused = post(callback_url="http://[fd00:ec2::254]/hook")
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["callback_url"]
    assert connections == []


def test_an_allowed_host_serves_callback_urls_too(post, settings) -> None:
    assert post(callback_url="http://localhost:9/hook").status_code == 422
    settings.SAM3WEB_OUTBOUND_ALLOW = ["localhost"]
    made = post(callback_url="http://localhost:9/hook")
    assert made.status_code == 201
    assert made.json()["callback_url"] == "http://localhost:9/hook"


def test_the_run_form_obeys_the_same_setting(
    signed_in: Client, server: ImageServer, settings
) -> None:
    from tests.factories import form_data

    url = server.url("/images/cat.jpg")
    refused = signed_in.post("/runs/new/", form_data(image_url=url))
    assert refused.status_code == 400
    assert "private or local network" in refused.content.decode()
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]
    assert signed_in.post("/runs/new/", form_data(image_url=url)).status_code == 302


@pytest.mark.parametrize("value", ["10.0.0.0/33", "bad host!", "http://x.example"])
def test_nonsense_in_the_setting_stops_start_up(monkeypatch, value: str) -> None:
    from sam3web.settings import _outbound_allow

    monkeypatch.setenv("SAM3WEB_OUTBOUND_ALLOW", f"10.1.2.3, {value}")
    with pytest.raises(ImproperlyConfigured, match="SAM3WEB_OUTBOUND_ALLOW"):
        _outbound_allow("SAM3WEB_OUTBOUND_ALLOW")


def test_the_setting_reads_hosts_addresses_and_networks(monkeypatch) -> None:
    from sam3web.settings import _outbound_allow

    monkeypatch.setenv(
        "SAM3WEB_OUTBOUND_ALLOW", " pipeline.lan, 10.1.2.3,192.168.0.0/16 ,[fd00::1]"
    )
    assert _outbound_allow("SAM3WEB_OUTBOUND_ALLOW") == [
        "pipeline.lan",
        "10.1.2.3",
        "192.168.0.0/16",
        "fd00::1",
    ]


# --- the run form's intake, for URLs given to the API ---------------------------------------


def test_an_image_url_is_taken_in_as_the_person_sees_it(
    post, server: ImageServer, settings
) -> None:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]
    url = server.url("/images/cat-exif-rotated.jpg")  # stored 451×300, shown 300×451
    outside = post(input={"image_url": url, "point_prompts": [{"x": 350, "y": 20, "label": 1}]})
    assert outside.status_code == 422
    assert "300×451" in outside.json()["errors"][0]["msg"]
    inside = post(input={"image_url": url, "point_prompts": [{"x": 20, "y": 400, "label": 1}]})
    assert inside.status_code == 201
    run = Run.objects.get(pk=inside.json()["id"])
    assert (run.image.width, run.image.height) == (300, 451)
    assert run.image.converted  # Runflow gets our upright copy, not the original URL


def test_an_image_url_over_the_pixel_limit_is_refused(post, server: ImageServer, settings) -> None:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]
    msg = image_refused(post(input={"image_url": server.url("/images/bad/bomb-30000x30000.png")}))
    assert "megapixels" in msg


def test_an_image_url_over_the_size_limit_is_refused(post, server: ImageServer, settings) -> None:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]
    settings.SAM3WEB_MAX_IMAGE_BYTES = 10_000
    msg = image_refused(post(input={"image_url": server.url("/images/cat.jpg")}))
    assert "limit" in msg


@pytest.mark.parametrize(
    ("path", "words"),
    [("/page", "web page"), ("/status/404", "404"), ("/loop", "loop")],
)
def test_an_image_url_that_gives_no_image_says_why(
    post, server: ImageServer, settings, path: str, words: str
) -> None:
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]
    assert words in image_refused(post(input={"image_url": server.url(path)}))
