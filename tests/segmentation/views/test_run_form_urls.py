"""Image URLs pasted into the run form: the server fetches them itself, safely, and every
failure is a message beside the URL field with no run left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from segmentation.models import Run, SourceImage
from segmentation.runs import create_run
from tests.factories import field_errors, form_data, run_worker, stored_image
from tests.image_server import ImageServer

URL = "/runs/new/"


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with ImageServer() as s:
        yield s


@pytest.fixture
def allow_local(settings) -> None:
    # Our test servers live on 127.0.0.1, which production refuses.
    settings.SAM3WEB_FETCH_ALLOW_PRIVATE = True
    settings.SAM3WEB_FETCH_TIMEOUT = 1.5


def refused(client: Client, url: str) -> str:
    response = client.post(URL, form_data(image=None, image_url=url))
    assert response.status_code == 400
    assert Run.objects.count() == 0
    assert SourceImage.objects.count() == 0
    return " ".join(field_errors(response, "image_url"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/page", "web page, not an image"),
        ("/images/cat.jpg?type=text/html", ""),  # the content decides, not the header
        ("/loop", "redirects in a loop"),
        ("/chain/9", "more than 5 times"),
        ("/trickle", "took longer than"),
        ("/stall", "took longer than"),
        ("/status/404", "HTTP 404"),
        ("/images/bad/truncated.jpg", "damaged or incomplete"),
        ("/images/bad/script.svg", "SVG"),
        ("/images/bad/bomb-30000x30000.png", "megapixels"),
    ],
)
def test_bad_urls_get_a_message_beside_the_field(
    signed_in: Client, server: ImageServer, allow_local, path: str, words: str
) -> None:
    if path.endswith("type=text/html"):
        # A real JPEG served as text/html is still a JPEG: it is accepted.
        response = signed_in.post(URL, form_data(image=None, image_url=server.url(path)))
        assert response.status_code == 302
        return
    assert words in refused(signed_in, server.url(path))


@pytest.mark.django_db
def test_a_body_over_the_size_limit_is_cut_off(
    signed_in: Client, server: ImageServer, allow_local, settings
) -> None:
    settings.SAM3WEB_MAX_IMAGE_BYTES = 1_000_000
    assert "larger than" in refused(signed_in, server.url("/big?bytes=5000000&length=none"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/cat.jpg",
        "http://localhost/cat.jpg",
        "http://[::1]/cat.jpg",
        "http://10.0.0.1/cat.jpg",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/x.png",
    ],
)
def test_private_addresses_are_refused(signed_in: Client, url: str) -> None:
    assert "private or local" in refused(signed_in, url)


@pytest.mark.django_db
def test_a_redirect_to_a_private_address_is_refused(
    signed_in: Client, server: ImageServer, settings
) -> None:
    # Only the test server itself is allowed: the hop it redirects to must be checked again.
    settings.SAM3WEB_OUTBOUND_ALLOW = ["127.0.0.1"]
    words = refused(signed_in, server.url("/redirect?to=http://127.0.0.2/cat.jpg"))
    assert "private or local" in words


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["ftp://example.com/cat.jpg", "file:///etc/passwd"])
def test_other_schemes_are_refused(signed_in: Client, url: str) -> None:
    response = signed_in.post(URL, form_data(image=None, image_url=url))
    assert response.status_code == 400
    assert field_errors(response, "image_url")
    assert Run.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_url_image_is_fetched_shown_and_sent(
    signed_in: Client, server: ImageServer, allow_local, standin
) -> None:
    url = server.url("/chain/2?final=/images/cat-exif-rotated.jpg")
    response = signed_in.post(URL, form_data(image=None, image_url=url))
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.source_url == url
    assert (run.image.width, run.image.height) == (300, 451)  # as a person sees it
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    # Our copy was turned upright, so Runflow gets our copy, not the original URL.
    [call] = standin.create_calls()
    assert call.json["input"]["image_url"].startswith("data:image/jpeg;base64,")
    assert run.image_delivery == "inline"


@pytest.mark.django_db(transaction=True)
def test_an_unchanged_https_image_is_sent_as_its_url(signed_in: Client, standin) -> None:
    """Runflow fetches an https URL itself, so an image we did not change goes as its URL.
    (Fetching from an https test server needs certificates; the run is made directly.)"""
    run = create_run(
        owner=None,
        image=stored_image("cat.jpg"),
        source_url="https://images.example.com/cat.jpg",
        input={"prompt": "cat", "max_masks": 3},
    )
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED, run.error_message
    assert run.image_delivery == "url"
    [call] = standin.create_calls()
    assert call.json["input"]["image_url"] == "https://images.example.com/cat.jpg"
