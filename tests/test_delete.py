"""Deleting runs: only the owner or an admin, after confirming; the run's files go with it and
nothing is left orphaned in the media folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from segmentation.models import CallbackDelivery, Mask, Run, SourceImage
from tests.conftest import run_worker
from tests.test_exports import make_run

pytestmark = pytest.mark.django_db(transaction=True)


def media_files() -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    found = set()
    for folder, _dirs, files in os.walk(root):
        for name in files:
            found.add(str(Path(folder, name).relative_to(root)))
    return found


def files_of(run: Run) -> set[str]:
    names = {f.name for f in (run.thumbnail, run.overlay, run.preview) if f}
    names |= {m.file.name for m in run.masks.all() if m.file}
    return names


@pytest.fixture
def grace(django_user_model):
    return django_user_model.objects.create_user("grace", password="another long pass")


@pytest.fixture
def teammate(client: Client, grace) -> Client:
    other = Client()
    other.force_login(grace)
    return other


def test_deleting_every_run_leaves_an_empty_media_folder(signed_in: Client, standin) -> None:
    a = make_run(signed_in, standin)  # coins.png
    b = make_run(signed_in, standin)  # the same photo again: one SourceImage, two runs
    c = make_run(signed_in, standin, image="cat.jpg", boxes=[])
    assert a.image_id == b.image_id != c.image_id
    for run in (a, b, c):
        assert run.masks.exclude(file="").exists() and run.thumbnail and run.overlay
    before = media_files()
    own = {run.pk: files_of(run) for run in (a, b, c)}
    assert own[a.pk] | own[b.pk] | own[c.pk] <= before
    assert len(own[a.pk]) >= 4  # thumbnail, overlay, masks (and the preview)

    response = signed_in.post(f"/runs/{a.pk}/delete/")
    assert response.status_code == 302 and response["Location"] == "/runs/"
    assert not Run.objects.filter(pk=a.pk).exists()
    assert not Mask.objects.filter(run_id=a.pk).exists()
    # Its own files are gone; the photo stays, as run b still uses it.
    assert media_files() == before - own[a.pk]
    assert SourceImage.objects.filter(pk=a.image_id).exists()

    for run in (b, c):
        assert signed_in.post(f"/runs/{run.pk}/delete/").status_code == 302
    assert media_files() == set()
    assert not SourceImage.objects.exists()
    assert not CallbackDelivery.objects.exists()
    assert "deleted" in signed_in.get("/runs/").content.decode()


def test_a_teammate_cannot_delete_someone_elses_run(
    signed_in: Client, teammate: Client, standin
) -> None:
    run = make_run(signed_in, standin)
    before = media_files()
    page = signed_in.get(run.get_absolute_url()).content.decode()
    assert f"/runs/{run.pk}/delete/" in page
    assert f"/runs/{run.pk}/delete/" not in teammate.get(run.get_absolute_url()).content.decode()

    for method in (teammate.get, teammate.post):
        response = method(f"/runs/{run.pk}/delete/")
        assert response.status_code == 403
        assert "Only the person who made this run, or an admin" in response.content.decode()
    assert Run.objects.filter(pk=run.pk).exists()
    assert media_files() == before


def test_an_admin_can_delete_anyones_run(signed_in: Client, grace, standin) -> None:
    run = make_run(signed_in, standin)
    grace.is_staff = True
    grace.save()
    admin = Client()
    admin.force_login(grace)
    assert admin.post(f"/runs/{run.pk}/delete/").status_code == 302
    assert not Run.objects.exists() and media_files() == set()


def test_delete_asks_first(signed_in: Client, standin) -> None:
    run = make_run(signed_in, standin)
    response = signed_in.get(f"/runs/{run.pk}/delete/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Delete this run?" in html and 'method="post"' in html
    assert Run.objects.filter(pk=run.pk).exists()


def test_a_run_being_written_by_the_worker_is_not_deleted_yet(signed_in: Client, standin) -> None:
    run = make_run(signed_in, standin)
    for fields in ({"status": Run.Status.SUBMITTING}, {"artifacts": Run.Artifacts.COPYING}):
        Run.objects.filter(pk=run.pk).update(**fields)
        response = signed_in.post(f"/runs/{run.pk}/delete/")
        assert response.status_code == 409
        assert "Try again in a few seconds" in response.content.decode()
        assert Run.objects.filter(pk=run.pk).exists()
        Run.objects.filter(pk=run.pk).update(
            status=Run.Status.SUCCEEDED, artifacts=Run.Artifacts.DONE
        )


def test_the_worker_shrugs_at_a_run_deleted_under_it(signed_in: Client, standin) -> None:
    """Queued work for a deleted run (its poll, say) finds nothing and writes nothing."""
    from tests.test_submit import submit

    standin.complete_after = 30
    run = submit(signed_in, prompt="cat")
    run_worker()  # submitted; a poll is scheduled
    assert signed_in.post(f"/runs/{run.pk}/delete/").status_code == 302
    run_worker()
    assert not Run.objects.exists()
    assert media_files() == set()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/runs/00000000-0000-0000-0000-000000000000/delete/", 404),
        ("/runs/not-a-uuid/delete/", 404),
        ("/runs/12345/delete/", 404),
    ],
)
def test_unknown_and_malformed_ids(signed_in: Client, path: str, status: int) -> None:
    assert signed_in.post(path).status_code == status


def test_deleting_twice_is_harmless(signed_in: Client, standin) -> None:
    run = make_run(signed_in, standin)
    assert signed_in.post(f"/runs/{run.pk}/delete/").status_code == 302
    assert signed_in.post(f"/runs/{run.pk}/delete/").status_code == 404


def test_not_signed_in_is_sent_to_sign_in(client: Client, signed_in: Client, standin) -> None:
    run = make_run(signed_in, standin)
    anonymous = Client()
    response = anonymous.post(f"/runs/{run.pk}/delete/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert Run.objects.filter(pk=run.pk).exists()
