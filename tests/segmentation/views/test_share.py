"""Public links to a run: made and revoked by its owner (or an admin), opened by anyone without
signing in, and gone everywhere (the page and every file it names) once revoked. Real runs:
the real worker copies the Runflow stand-in's masks into our storage, real files, real DB."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import zipfile
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from PIL import Image

from segmentation.engines.runflow import callbacks
from segmentation.models import Run
from tests.factories import drain, ellipse, run_with_masks, settled, submit, upload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_polling")]

TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
BOXES = '[{"x_min": 20, "y_min": 30, "x_max": 150, "y_max": 140}, {"x_min": 200, "y_min": 120, "x_max": 360, "y_max": 280}]'  # noqa: E501


def body(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def said(response) -> str:
    """The newest message for the person (earlier ones stay queued without a page between)."""
    return [str(m) for m in get_messages(response.wsgi_request)][-1]


class Urls(HTMLParser):
    """Every URL a page names: src, href, action and data-viewer attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "data-viewer") and value:
                self.urls.append(value)


def page_urls(html: str) -> list[str]:
    parser = Urls()
    parser.feed(html)
    return parser.urls


def client_for(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def coins(signed_in: Client, standin) -> Run:
    """A finished run of ada's with two masks, its overlay, thumbnail and preview copied."""
    standin.complete_after = 0.05
    run = submit(
        signed_in,
        image=upload("coins.png"),
        prompt="coins",
        box_prompts=BOXES,
        return_multiple_masks="on",
        max_masks="4",
    )
    drain(settled(run), timeout=40)
    run = Run.objects.get(pk=run.pk)
    assert run.artifacts == Run.Artifacts.DONE and run.masks.count() == 2 and run.overlay
    return run


def share(client: Client, run: Run, **headers) -> str:
    response = client.post(f"/runs/{run.id}/share/", **headers)
    assert response.status_code in (200, 302), body(response)[:500]
    run.refresh_from_db()
    assert run.share_token
    return run.share_token


def every_url_of(anonymous: Client, token: str) -> list[str]:
    """The public page and every URL under the link that it names, directly or through
    viewer.json (the image, each crop and each mask); all must lie under the link."""
    prefix = f"/s/{token}/"
    page = anonymous.get(prefix)
    assert page.status_code == 200
    # "data:," is the empty icon: it keeps browsers from asking the app for /favicon.ico.
    named = [
        u
        for u in page_urls(page.content.decode())
        if not u.startswith(("#", "/static/")) and u != "data:,"
    ]
    outside = [u for u in named if not u.startswith(prefix)]
    assert outside == [], "a public page must not lead into the app"
    viewer = [u for u in named if u.endswith("viewer.json")]
    assert viewer == [prefix + "viewer.json"]
    data = anonymous.get(viewer[0]).json()
    from_json = [data["image"]["url"], data["image"]["full_url"]]
    for inst in data["instances"]:
        from_json += [inst["crop_url"], inst["mask_url"]]
    assert all(u.startswith(prefix) for u in from_json), from_json
    return [prefix, *dict.fromkeys(named + from_json)]


def test_the_owner_makes_a_link_that_opens_everything_without_signing_in(
    signed_in: Client, coins: Run
) -> None:
    response = signed_in.post(f"/runs/{coins.id}/share/")
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{coins.id}/#share"
    assert (
        said(response)
        == "Public link created: anyone with it can see this run, without signing in."
    )
    coins.refresh_from_db()
    token = coins.share_token
    assert token is not None
    assert TOKEN_SHAPE.fullmatch(token) and coins.shared_at is not None

    anonymous = Client()
    urls = every_url_of(anonymous, token)
    kinds = {urlsplit(u).path.removeprefix(f"/s/{token}/") for u in urls}
    # The page, the image, the server's overlay, viewer.json, 2 crops, 2 masks, 4 exports.
    assert {"", "image", "overlay.png", "viewer.json", "masks/1.png", "masks/2.png"} <= kinds
    assert {"masks/1.crop.png", "masks/2.crop.png"} <= kinds
    assert {f"export/{f}" for f in ("masks.zip", "json", "coco", "composite.png")} <= kinds
    for url in urls:
        response = anonymous.get(url)
        assert response.status_code == 200, url
        assert response["Referrer-Policy"] == "no-referrer", url
        assert "noindex" in response["X-Robots-Tag"], url
        cache_control = response["Cache-Control"]
        assert "private" in cache_control or "no-store" in cache_control, url
        assert "public" not in cache_control, url
        assert len(body(response)) > 0, url
    page = anonymous.get(f"/s/{token}/")
    assert page["Cache-Control"] == "no-store"
    html = page.content.decode()
    assert '<meta name="robots" content="noindex, nofollow">' in html
    # What the page shows: the instances with scores and boxes, the prompt and the options.
    assert "“coins”" in html
    for mask in coins.masks.all():
        assert f"{mask.score:.3f}" in html
        assert f"[{mask.x_min}, {mask.y_min}, {mask.x_max}, {mask.y_max}]" in html
    assert "return_multiple_masks" in html
    # The files are the run's own: the mask under the link is the stored mask.
    with coins.masks.get(index=0).file.open("rb") as f:
        assert body(anonymous.get(f"/s/{token}/masks/1.png")) == f.read()


def test_revoking_turns_every_url_of_the_link_into_a_404(
    signed_in: Client, coins: Run, admin
) -> None:
    token = share(signed_in, coins)
    anonymous = Client()
    urls = every_url_of(anonymous, token)
    assert len(urls) >= 12

    response = signed_in.post(f"/runs/{coins.id}/unshare/")
    assert response.status_code == 302
    assert said(response) == "Public link revoked: it now answers “not found”."
    coins.refresh_from_db()
    assert coins.share_token is None and coins.shared_at is None
    for url in urls:
        assert anonymous.get(url).status_code == 404, url
    # Signed-in teammates do not get it back either: a revoked token is no token.
    assert signed_in.get(f"/s/{token}/").status_code == 404
    # A new link is a new token; the old one stays dead.
    fresh = share(signed_in, coins)
    assert fresh != token
    assert anonymous.get(f"/s/{fresh}/").status_code == 200
    assert anonymous.get(f"/s/{token}/").status_code == 404
    assert anonymous.get(f"/s/{token}/image").status_code == 404


def test_making_a_link_twice_keeps_the_same_link(signed_in: Client, owner) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    token = share(signed_in, run)
    shared_at = run.shared_at
    response = signed_in.post(f"/runs/{run.id}/share/")
    assert said(response) == "This run already has a public link: it is the one below."
    run.refresh_from_db()
    assert (run.share_token, run.shared_at) == (token, shared_at)
    # Revoking what is not there says so and changes nothing.
    signed_in.post(f"/runs/{run.id}/unshare/")
    response = signed_in.post(f"/runs/{run.id}/unshare/")
    assert said(response) == "This run has no public link."


def test_a_teammate_can_neither_make_nor_revoke_the_owners_link(
    signed_in: Client, owner, teammate
) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    grace = client_for(teammate)
    response = grace.post(f"/runs/{run.id}/share/")
    assert response.status_code == 403
    assert "Only the run's owner or an admin" in response.content.decode()
    run.refresh_from_db()
    assert run.share_token is None

    token = share(signed_in, run)
    response = grace.post(f"/runs/{run.id}/unshare/")
    assert response.status_code == 403
    assert "Only the run's owner or an admin" in response.content.decode()
    assert Run.objects.get(pk=run.pk).share_token == token
    assert Client().get(f"/s/{token}/").status_code == 200


def test_an_admin_can_revoke_and_make_anyones_link(signed_in: Client, owner, admin) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    token = share(signed_in, run)
    root = client_for(admin)
    assert root.post(f"/runs/{run.id}/unshare/").status_code == 302
    run.refresh_from_db()
    assert run.share_token is None
    assert Client().get(f"/s/{token}/").status_code == 404
    assert share(root, run) != token


def test_signed_out_people_are_sent_to_sign_in_and_nothing_changes(
    signed_in: Client, owner
) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    anonymous = Client()
    for action in ("share", "unshare"):
        response = anonymous.post(f"/runs/{run.id}/{action}/")
        assert response.status_code == 302
        assert response["Location"] == f"/accounts/login/?next=/runs/{run.id}/{action}/"
    run.refresh_from_db()
    assert run.share_token is None
    token = share(signed_in, run)
    anonymous.post(f"/runs/{run.id}/unshare/")
    assert Run.objects.get(pk=run.pk).share_token == token
    # Only POST changes anything; an unknown run is a 404.
    assert signed_in.get(f"/runs/{run.id}/share/").status_code == 405
    other = "00000000-0000-4000-8000-000000000000"
    assert signed_in.post(f"/runs/{other}/share/").status_code == 404


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "A" * 42,
        "A" * 44,
        "A" * 42 + "!",
        "A" * 42 + ".",
        "%20" * 15,
        "AAAAAAAAAAAAAAAAAAAAA%2FAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_malformed_tokens_are_a_404_without_a_query(
    client: Client, django_assert_num_queries, token: str
) -> None:
    for rest in ("", "image", "viewer.json", "masks/1.crop.png", "export/json"):
        with django_assert_num_queries(0):
            assert client.get(f"/s/{token}/{rest}").status_code == 404


def test_an_unknown_well_formed_token_is_a_404(client: Client, owner) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    Run.objects.filter(pk=run.pk).update(share_token="B" * 43)
    assert client.get("/s/" + "B" * 43 + "/").status_code == 200
    for token in ("A" * 43, "b" * 43, "B" * 42 + "C"):
        for rest in ("", "image", "viewer.json", "masks/1.png", "masks/1.crop.png"):
            response = client.get(f"/s/{token}/{rest}")
            assert response.status_code == 404
            assert "Nothing here" in response.content.decode()
    # Another run's token does not open this run's masks, nor masks that are not there.
    assert client.get("/s/" + "B" * 43 + "/masks/2.png").status_code == 404
    assert client.get("/s/" + "B" * 43 + "/masks/0.crop.png").status_code == 404
    assert client.get("/s/" + "B" * 43 + "/export/tiff").status_code == 404


def test_tokens_are_random_not_derived_from_the_run(signed_in: Client, owner) -> None:
    runs = [run_with_masks(owner, [(ellipse((10, 10, 40, 30)), None)]) for _ in range(4)]
    tokens = [share(signed_in, run) for run in runs]
    assert len(set(tokens)) == 4
    for run, token in zip(runs, tokens, strict=True):
        assert TOKEN_SHAPE.fullmatch(token)
        raw = base64.urlsafe_b64decode(token + "=")
        assert len(raw) == 32  # 256 random bits
        assert run.id.hex not in token.lower() and run.id.bytes not in raw
    # The same run shared again (after revoking) gets a token unrelated to the first.
    again = []
    for _ in range(3):
        signed_in.post(f"/runs/{runs[0].id}/unshare/")
        again.append(share(signed_in, runs[0]))
    assert len({tokens[0], *again}) == 4
    # Over all the tokens, every URL-safe character position varies: no fixed prefix or suffix.
    everything = tokens + again
    assert all(len({t[i] for t in everything}) > 1 for i in (0, 1, 21, 41))


def test_a_disabled_owners_links_stop_answering_until_the_account_is_enabled(
    signed_in: Client, owner, admin
) -> None:
    """Disabling an account (a teammate left, or the account was taken over) turns off what
    it published at once; the link is kept, so enabling the account again restores it."""
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    token = share(signed_in, run)
    anonymous = Client()
    urls = every_url_of(anonymous, token)
    owner.is_active = False
    owner.save()
    for url in urls:
        assert anonymous.get(url).status_code == 404, url
    run.refresh_from_db()
    assert run.share_token == token
    owner.is_active = True
    owner.save()
    assert anonymous.get(f"/s/{token}/").status_code == 200
    # An admin can still revoke it while the owner is away.
    owner.is_active = False
    owner.save()
    root = client_for(admin)
    assert root.post(f"/runs/{run.id}/unshare/").status_code == 302
    # An admin making one meanwhile is told it will not answer yet.
    response = root.post(f"/runs/{run.id}/share/")
    assert said(response) == (
        "Public link created, but it will not answer while the run's owner's account is disabled."
    )
    run.refresh_from_db()
    assert anonymous.get(f"/s/{run.share_token}/").status_code == 404
    root.post(f"/runs/{run.id}/unshare/")
    owner.is_active = True
    owner.save()
    assert anonymous.get(f"/s/{token}/").status_code == 404


def test_a_deleted_owners_links_stop_answering(signed_in: Client, owner) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    token = share(signed_in, run)
    owner.delete()
    run.refresh_from_db()
    assert run.owner is None and run.share_token == token
    assert Client().get(f"/s/{token}/").status_code == 404


def test_the_public_page_and_its_files_leave_out_people_ids_and_internals(
    standin, settings, live_server, django_user_model
) -> None:
    """A run that came back by a real callback: nothing of who made it, of Runflow, of the
    callback, of the request or of the team's metadata reaches anyone with the link."""
    settings.SAM3WEB_PUBLIC_URL = live_server.url
    settings.SAM3WEB_CALLBACK_GRACE = 30
    standin.complete_after = 0.05
    standin.callback_backoff = (0.05, 0.05)
    owner = django_user_model.objects.create_user(
        "zelda-q7", email="zelda.q7@example.org", password="owner horse battery"
    )
    client = client_for(owner)
    run = submit(
        client,
        image=upload("coins.png"),
        prompt="coins",
        box_prompts=BOXES,
        return_multiple_masks="on",
        metadata='{"project": "internal-codename-x9"}',
    )
    deadline = time.monotonic() + 20
    while not Run.objects.get(pk=run.pk).deliveries.exists():
        drain(lambda: True)
        assert time.monotonic() < deadline
        time.sleep(0.02)
    drain(settled(run), timeout=40)
    run = Run.objects.get(pk=run.pk)
    delivery = run.deliveries.get()
    assert run.provider_run_id and delivery.request_id and run.request_body
    token = share(client, run)

    secrets = {
        "username": owner.username,
        "email": owner.email,
        "run id": str(run.id),
        "run id (hex)": run.id.hex,
        "provider run id": run.provider_run_id,
        "callback token": callbacks.callback_token(run.id),
        "callback path": "/callbacks/runflow/",
        "delivery": delivery.request_id,
        "metadata": "internal-codename-x9",
        "original file name": "coins.png",
        "a link into the app": "/runs/",
    }
    anonymous = Client()
    seen: dict[str, bytes] = {}
    for url in every_url_of(anonymous, token):
        response = anonymous.get(url)
        assert response.status_code == 200, url
        data = body(response)
        if url.endswith("masks.zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                data = archive.read("instances.json")
        seen[url] = data
    for url, data in seen.items():
        text = data.decode("utf-8", "replace")
        leaks = [name for name, secret in secrets.items() if secret in text]
        assert leaks == [], url
    # The exports still say what they are about, with URLs under the link.
    described = json.loads(seen[f"/s/{token}/export/json"])
    assert described["run"]["url"] == f"http://testserver/s/{token}/"
    assert described["prompts"]["text"] == "coins"
    assert [i["url"] for i in described["instances"]] == [
        f"http://testserver/s/{token}/masks/{n}.png" for n in (1, 2)
    ]
    assert "metadata" not in described and "owner" not in described["run"]
    coco = json.loads(seen[f"/s/{token}/export/coco"])
    assert coco["info"]["contributor"] == "" and len(coco["annotations"]) == 2


def test_the_public_zip_holds_the_teams_masks_byte_for_byte(signed_in: Client, coins: Run):
    token = share(signed_in, coins)
    team = zipfile.ZipFile(io.BytesIO(body(signed_in.get(f"/runs/{coins.id}/export/masks.zip"))))
    public = Client().get(f"/s/{token}/export/masks.zip?visible=2")
    assert public.status_code == 200
    assert public["Content-Disposition"] == 'attachment; filename="coins-shared.zip"'
    shared = zipfile.ZipFile(io.BytesIO(body(public)))
    assert shared.namelist() == ["mask-02.png", "instances.json"]
    assert shared.read("mask-02.png") == team.read("mask-02.png")
    assert shared.getinfo("mask-02.png").compress_type == zipfile.ZIP_STORED
    described = json.loads(shared.read("instances.json"))
    assert described["hidden"] == [1]
    assert [i["file"] for i in described["instances"]] == ["mask-02.png"]
    # A view that makes no sense is a 400 with the reason, as for the team.
    bad = Client().get(f"/s/{token}/export/json?visible=9")
    assert bad.status_code == 400 and b"9" in bad.content


def test_the_viewer_data_under_the_link_matches_the_teams(signed_in: Client, coins: Run):
    token = share(signed_in, coins)
    team = signed_in.get(f"/runs/{coins.id}/viewer.json").json()
    public = Client().get(f"/s/{token}/viewer.json").json()
    assert public["run"] is None
    assert public["image"] == {
        **team["image"],
        "url": f"/s/{token}/image/display",
        "full_url": f"/s/{token}/image",
    }
    for mine, theirs in zip(public["instances"], team["instances"], strict=True):
        n = theirs["number"]
        version = theirs["crop_url"].split("?v=")[1]
        assert mine == {
            **theirs,
            "crop_url": f"/s/{token}/masks/{n}.crop.png?v={version}",
            "mask_url": f"/s/{token}/masks/{n}.png",
        }
        crop = Client().get(mine["crop_url"])
        assert crop.content == signed_in.get(theirs["crop_url"]).content
        assert Image.open(io.BytesIO(crop.content)).size == tuple(mine["crop"][2:])


def test_htmx_gets_the_share_panel_back_in_place(signed_in: Client, owner) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    response = signed_in.post(f"/runs/{run.id}/share/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.share_token is not None
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card share" id="share"')
    assert "<html" not in html
    assert f"http://testserver/s/{run.share_token}/" in html
    assert "Revoke public link" in html and "Public link created" in html
    # The note is in the panel, not left queued for the next page.
    assert list(get_messages(response.wsgi_request)) == []
    response = signed_in.post(f"/runs/{run.id}/unshare/", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert "Create public link" in html and run.share_token not in html


def test_the_run_page_shows_each_person_what_they_may_do(
    signed_in: Client, owner, teammate, admin
) -> None:
    run = run_with_masks(owner, [(ellipse((10, 10, 40, 30)), (10, 10, 41, 31))])
    permalink = f"http://testserver/runs/{run.id}/"
    grace, root = client_for(teammate), client_for(admin)

    mine = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert permalink in mine and "Create public link" in mine
    theirs = grace.get(f"/runs/{run.id}/").content.decode()
    assert permalink in theirs
    assert "This run has no public link" in theirs
    assert "Create public link" not in theirs and f"/runs/{run.id}/share/" not in theirs

    token = share(signed_in, run)
    mine = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert f"http://testserver/s/{token}/" in mine and "Revoke public link" in mine
    # A teammate learns that it exists, not the link: passing it on is the owner's call.
    theirs = grace.get(f"/runs/{run.id}/").content.decode()
    assert "This run has a public link" in theirs
    assert token not in theirs and "Revoke public link" not in theirs
    admins = root.get(f"/runs/{run.id}/").content.decode()
    assert token in admins and "Revoke public link" in admins


def test_a_shared_run_without_a_result_says_so(signed_in: Client, owner) -> None:
    run = run_with_masks(owner, [])
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, artifacts="")
    token = share(signed_in, run)
    response = Client().get(f"/s/{token}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "This run has no result yet" in html
    assert "sam3-viewer" not in html and "Export" not in html
    # Without masks there is nothing to export, said plainly.
    response = Client().get(f"/s/{token}/export/json")
    assert response.status_code == 404
    assert response.content.decode() == "This run has no masks to export.\n"
