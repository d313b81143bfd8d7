"""Stored images as pages load them: /images/<id>/display/ (the display copy, or the original
when it is small enough) beside /images/<id>/ (the original, always), for the team, and the
same pair under a public link."""

from __future__ import annotations

import io

import pytest
from django.test import Client
from PIL import Image

from segmentation.models import Run
from tests.factories import finished_run, image_bytes, make_run, stored_image

pytestmark = pytest.mark.django_db

LARGE = "large-4032x3024.jpg"


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_the_display_copy_of_a_large_photo(signed_in: Client) -> None:
    image = stored_image(LARGE)
    response = signed_in.get(f"/images/{image.pk}/display/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert response["Cache-Control"] == "private, max-age=86400, immutable"
    assert response["Content-Security-Policy"] == "default-src 'none'"
    data = body(response)
    im = Image.open(io.BytesIO(data))
    assert im.format == "WEBP" and im.size == (2016, 1512)
    assert int(response["Content-Length"]) == len(data) < image.byte_size / 4
    # The original is still there, whole, for who asks for it.
    original = signed_in.get(f"/images/{image.pk}/")
    assert original["Content-Type"] == "image/jpeg"
    assert body(original) == image_bytes(LARGE)


def test_a_small_image_is_its_own_display_copy(signed_in: Client) -> None:
    image = stored_image("coins.png")
    response = signed_in.get(f"/images/{image.pk}/display/")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "private, max-age=86400, immutable"
    assert body(response) == image_bytes("coins.png")


def test_an_image_stored_before_copies_gets_one_on_its_first_view(
    signed_in: Client, settings
) -> None:
    settings.SAM3WEB_DISPLAY_SIZE = 0
    image = stored_image(LARGE)
    # Copies off: pages load the original.
    assert body(signed_in.get(f"/images/{image.pk}/display/")) == image_bytes(LARGE)
    settings.SAM3WEB_DISPLAY_SIZE = 2048
    first = signed_in.get(f"/images/{image.pk}/display/")
    assert first["Content-Type"] == "image/webp"
    image.refresh_from_db()
    assert image.display
    assert body(signed_in.get(f"/images/{image.pk}/display/")) == body(first)
    # Turned off again: the original, though the copy is there.
    settings.SAM3WEB_DISPLAY_SIZE = 0
    assert body(signed_in.get(f"/images/{image.pk}/display/")) == image_bytes(LARGE)


def test_the_same_people_as_the_original(
    stranger: Client, teammate_client: Client, disabled_client: Client, owner
) -> None:
    image = stored_image(LARGE)
    for url in (f"/images/{image.pk}/", f"/images/{image.pk}/display/"):
        response = stranger.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
        assert disabled_client.get(url).status_code == 302
        assert teammate_client.get(url).status_code == 200
        assert teammate_client.post(url).status_code == 405
    assert teammate_client.get("/images/999999/display/").status_code == 404


def test_a_public_link_serves_the_display_copy_until_revoked(signed_in: Client, owner) -> None:
    run = make_run(owner, image=stored_image(LARGE))
    signed_in.post(f"/runs/{run.id}/share/")
    run.refresh_from_db()
    anonymous = Client()
    url = f"/s/{run.share_token}/image/display"
    response = anonymous.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"
    assert response["Cache-Control"] == "private, max-age=600"
    assert response["Referrer-Policy"] == "no-referrer"
    assert Image.open(io.BytesIO(body(response))).size == (2016, 1512)
    page = anonymous.get(f"/s/{run.share_token}/").content.decode()
    assert f'src="{url}"' in page and f'href="/s/{run.share_token}/image"' in page
    signed_in.post(f"/runs/{run.id}/unshare/")
    assert anonymous.get(url).status_code == 404


def test_the_run_page_shows_the_display_copy_and_links_the_original(
    signed_in: Client, owner
) -> None:
    run = finished_run(owner, image=LARGE, masks=2)
    html = signed_in.get(f"/runs/{run.id}/").content.decode()
    image = run.image
    assert f'<img src="/images/{image.pk}/display/" width="4032" height="3024"' in html
    assert f'<a href="/images/{image.pk}/">Full-size image</a>' in html
    assert f'src="/images/{image.pk}/"' not in html
    data = signed_in.get(f"/runs/{run.id}/viewer.json").json()
    assert data["image"] == {
        "url": f"/images/{image.pk}/display/",
        "full_url": f"/images/{image.pk}/",
        "width": 4032,
        "height": 3024,
    }
    # Masks stay in the original's pixels.
    assert all(i["crop"][0] + i["crop"][2] <= 4032 for i in data["instances"])
    assert all(m.file.size > 0 for m in Run.objects.get(pk=run.pk).masks.all())
