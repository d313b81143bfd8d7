"""The one way runs are made and acted on (segmentation.runs): creating a run stores it and
its submit task together or not at all; deleting needs the owner or an admin, after
confirming, and the run's files go with it, nothing left orphaned in the media folder."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django_tasks_db.models import DBTaskResult

from segmentation import engines
from segmentation.models import CallbackDelivery, Mask, Run, SourceImage
from segmentation.runs import AlreadySubmitted, create_run
from tests.factories import coins_run, run_worker, stored_image, submit

pytestmark = pytest.mark.django_db(transaction=True)


def queued_submits() -> list[list[str]]:
    """The positional arguments of each queued submit task: the run's id, as a string."""
    return [
        task.args_kwargs["args"]
        for task in DBTaskResult.objects.filter(task_path="segmentation.tasks.submit_run")
    ]


def test_create_run_stores_the_run_and_queues_its_submit(owner) -> None:
    image = stored_image("cat.jpg")
    run = create_run(owner=owner, image=image, input={"prompt": "cat"}, metadata={"a": 1})
    run.refresh_from_db()
    assert (run.owner, run.image, run.engine, run.status) == (owner, image, "runflow", "pending")
    assert run.metadata == {"a": 1} and run.prompt_text == "cat"
    assert queued_submits() == [[str(run.pk)]]
    assert run.task_id == str(DBTaskResult.objects.get().id)


def test_a_run_is_never_stored_without_its_task_nor_a_task_without_its_run(owner) -> None:
    image = stored_image("cat.jpg")

    class Refused(Exception):
        pass

    with pytest.raises(Refused), transaction.atomic():
        create_run(owner=owner, image=image, input={"prompt": "cat"})
        raise Refused  # the caller's transaction fails after the run was made: both go
    assert not Run.objects.exists() and queued_submits() == []

    # Several runs in one transaction (as reuse makes them): each is queued with its run, in
    # that transaction, so a worker sees both or neither.
    with transaction.atomic():
        made = [create_run(owner=owner, image=image, input={"prompt": p}) for p in "abc"]
        assert len(queued_submits()) == 3
    assert sorted(args[0] for args in queued_submits()) == sorted(str(r.pk) for r in made)
    assert all(r.task_id for r in Run.objects.all())


def test_the_runs_engine_does_the_sending(owner, standin) -> None:
    run = create_run(owner=owner, image=stored_image("cat.jpg"), input={"prompt": "cat"})
    run_worker()
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED and run.status_label == "Queued at Runflow"
    assert engines.for_run(run) is engines.get("runflow")
    with pytest.raises(KeyError):
        engines.get("no-such-engine")


def media_files() -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    found = set()
    for folder, _dirs, files in os.walk(root):
        for name in files:
            found.add(str(Path(folder, name).relative_to(root)))
    return found


def files_of(run: Run) -> set[str]:
    # A file field is true when it has a name: test the name itself, which mypy can narrow.
    names = {f.name for f in (run.thumbnail, run.overlay, run.preview) if f.name}
    names |= {m.file.name for m in run.masks.all() if m.file.name}
    return names


def test_deleting_every_run_leaves_an_empty_media_folder(
    signed_in: Client, standin, settings
) -> None:
    settings.SAM3WEB_DISPLAY_SIZE = 256  # so that these small photos get display copies too
    a = coins_run(signed_in, standin)  # coins.png
    b = coins_run(signed_in, standin)  # the same photo again: one SourceImage, two runs
    c = coins_run(signed_in, standin, image="cat.jpg", boxes=[])
    assert a.image_id == b.image_id != c.image_id
    for run in (a, b, c):
        assert run.masks.exclude(file="").exists() and run.thumbnail and run.overlay
        assert run.image.display and run.image.thumbnail
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
    signed_in: Client, teammate_client: Client, standin
) -> None:
    run = coins_run(signed_in, standin)
    before = media_files()
    page = signed_in.get(run.get_absolute_url()).content.decode()
    assert f"/runs/{run.pk}/delete/" in page
    assert (
        f"/runs/{run.pk}/delete/"
        not in teammate_client.get(run.get_absolute_url()).content.decode()
    )

    for method in (teammate_client.get, teammate_client.post):
        response = method(f"/runs/{run.pk}/delete/")
        assert response.status_code == 403
        assert "Only the person who made this run, or an admin" in response.content.decode()
    assert Run.objects.filter(pk=run.pk).exists()
    assert media_files() == before


def test_an_admin_can_delete_anyones_run(signed_in: Client, admin_client: Client, standin) -> None:
    run = coins_run(signed_in, standin)
    assert admin_client.post(f"/runs/{run.pk}/delete/").status_code == 302
    assert not Run.objects.exists() and media_files() == set()


def test_delete_asks_first(signed_in: Client, standin) -> None:
    run = coins_run(signed_in, standin)
    response = signed_in.get(f"/runs/{run.pk}/delete/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Delete this run?" in html and 'method="post"' in html
    assert Run.objects.filter(pk=run.pk).exists()


def test_a_run_being_written_by_the_worker_is_not_deleted_yet(signed_in: Client, standin) -> None:
    run = coins_run(signed_in, standin)
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
    run = coins_run(signed_in, standin)
    assert signed_in.post(f"/runs/{run.pk}/delete/").status_code == 302
    assert signed_in.post(f"/runs/{run.pk}/delete/").status_code == 404


def test_not_signed_in_is_sent_to_sign_in(client: Client, signed_in: Client, standin) -> None:
    run = coins_run(signed_in, standin)
    anonymous = Client()
    response = anonymous.post(f"/runs/{run.pk}/delete/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert Run.objects.filter(pk=run.pk).exists()


def test_a_submission_key_makes_one_run_per_owner(owner, teammate) -> None:
    image = stored_image("cat.jpg")
    first = create_run(
        owner=owner, image=image, input={"prompt": "cat"}, metadata={}, submission_key="k1"
    )
    with pytest.raises(AlreadySubmitted) as again:
        create_run(
            owner=owner, image=image, input={"prompt": "dog"}, metadata={}, submission_key="k1"
        )
    assert again.value.run == first
    other = create_run(
        owner=teammate, image=image, input={"prompt": "cat"}, metadata={}, submission_key="k1"
    )
    # No key (a script that never asked for one) is no promise: every call is a run.
    create_run(owner=owner, image=image, input={"prompt": "cat"}, metadata={})
    create_run(owner=owner, image=image, input={"prompt": "cat"}, metadata={})
    assert Run.objects.count() == 4 and other != first
    assert len(queued_submits()) == 4


def test_two_posts_of_one_form_at_the_same_moment_make_one_run(owner) -> None:
    """The database's unique constraint settles the race the first look cannot."""
    image = stored_image("cat.jpg")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def post() -> None:
        barrier.wait()
        try:
            create_run(
                owner=owner,
                image=image,
                input={"prompt": "cat"},
                metadata={},
                submission_key="race",
            )
            outcomes.append("made")
        except AlreadySubmitted:
            outcomes.append("already")
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["already", "made"]
    assert Run.objects.count() == 1 and len(queued_submits()) == 1
