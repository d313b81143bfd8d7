"""Seeding realistic runs (manage.py seed_runs): consistent rows, real files, repeatable."""

from __future__ import annotations

import datetime as dt
import io
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.test import Client
from PIL import Image

from segmentation.imaging.render import PALETTE
from segmentation.models import Mask, Run, SourceImage
from segmentation.seed import seed_runs
from tests.factories import colour_at
from tests.sample_images import IMAGES

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 3, 11, 15, 0, tzinfo=dt.UTC)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A few small photos (drawing masks on the 12 MP one takes seconds) and files the
    seeder must skip: a broken one, a 1×1 pixel, a text file, and a subfolder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("cat.jpg", "coins.png", "coffee.jpg", "tiny-1x1.png", "README.md"):
        shutil.copy(IMAGES / name, folder / name)
    shutil.copy(IMAGES / "bad" / "truncated.jpg", folder / "truncated.jpg")
    (folder / "bad").mkdir()
    shutil.copy(IMAGES / "cat-cmyk.jpg", folder / "bad" / "cat-cmyk.jpg")
    return folder


def stored(name: str | None) -> bool:
    """Whether a file field's name names a stored file (no name, None or "", names none)."""
    if not name:
        return False
    return Path(default_storage.path(name)).is_file()


def snapshot() -> list[tuple]:
    """What a seeded history is made of, ids and dates included."""
    rows = []
    for run in Run.objects.select_related("owner").prefetch_related("masks").order_by("id"):
        assert run.owner is not None  # every seeded run has an owner
        rows.append(
            (
                str(run.id),
                run.owner.username,
                run.created_at,
                run.status,
                run.input,
                run.cost,
                run.duration_ms,
                run.parent_id,
                run.thumbnail.name,
                [(m.index, m.file.name, m.score, m.box, m.area) for m in run.masks.all()],
            )
        )
    return rows


def test_seeded_runs_have_consistent_columns_and_every_file_they_name(photos: Path) -> None:
    report = seed_runs(120, users=3, seed=5, images_dir=photos, now=NOW)

    assert report.runs == Run.objects.count() == 120
    assert sorted(report.images) == ["cat.jpg", "coffee.jpg", "coins.png"]
    assert SourceImage.objects.count() == 3
    assert report.users == report.users_created == ["alice", "bob", "carol"]
    owners = set(Run.objects.values_list("owner__username", flat=True))
    assert owners == {"alice", "bob", "carol"}
    alice = get_user_model().objects.get(username="alice")
    assert not alice.has_usable_password()  # no published password on a seeded install

    statuses = set(Run.objects.values_list("status", flat=True))
    assert {Run.Status.SUCCEEDED, Run.Status.FAILED} <= statuses
    assert report.statuses == {
        s: Run.objects.filter(status=s).count() for s in statuses
    }  # the report tells the truth
    kinds = {(bool(r.prompt_text), r.point_count > 0, r.box_count > 0) for r in Run.objects.all()}
    assert {(True, False, False), (False, True, False), (False, False, True)} <= kinds

    oldest = NOW - dt.timedelta(days=560)
    files = 0
    for run in Run.objects.select_related("image").prefetch_related("masks"):
        # The columns the history filters on match the input they copy.
        assert run.prompt_text == run.input["prompt"]
        assert run.point_count == len(run.input.get("point_prompts", []))
        assert run.box_count == len(run.input.get("box_prompts", []))
        assert run.mask_count == len(run.masks.all())
        assert oldest < run.created_at <= NOW
        w, h = run.image.width, run.image.height
        for p in run.points:
            assert 0 <= p["x"] < w and 0 <= p["y"] < h and p["label"] in (0, 1)
        for b in run.boxes:
            assert 0 <= b["x_min"] < b["x_max"] <= w and 0 <= b["y_min"] < b["y_max"] <= h
        if run.status == Run.Status.SUCCEEDED:
            assert run.cost in (Decimal("0.005"), None)
            assert run.duration_ms is not None and run.duration_ms > 0
            assert run.artifacts == Run.Artifacts.DONE
            assert stored(run.thumbnail.name) and stored(run.overlay.name)
            files += 2
            for mask in run.masks.all():
                assert stored(mask.file.name)
                files += 1
                with Image.open(mask.file.path) as im:
                    assert (im.format, im.mode, im.size) == ("PNG", "1", (w, h))
                    assert im.getbbox() == mask.box
                    assert im.histogram()[255] == mask.area
        else:
            assert run.mask_count == 0 and not run.thumbnail and not run.overlay
            # Runflow bills none of these, and stale runs await a figure: no cost of their own.
            assert run.cost in (None, Decimal("0"))
    on_disk = [
        f
        for folder in ("masks", "overlays", "thumbs")
        for f in Path(default_storage.path(folder)).rglob("*")
        if f.is_file()
    ]
    image_thumbs = SourceImage.objects.count()
    assert files == report.files == len(on_disk) - image_thumbs
    assert Mask.objects.count() == report.masks > 0
    for image in SourceImage.objects.all():
        assert stored(image.file.name) and stored(image.thumbnail.name)
        # As old as its first run.
        first = image.runs.order_by("created_at").first()
        assert first is not None and image.created_at == first.created_at


def test_a_thumbnail_shows_the_masks_in_the_overlay_colours(photos: Path) -> None:
    seed_runs(30, users=1, seed=2, images_dir=photos, now=NOW)
    run = Run.objects.filter(mask_count__gte=1, image__original_name="coffee.jpg").first()
    assert run is not None
    mask = run.masks.get(index=0)
    assert mask.x_min is not None and mask.x_max is not None  # a drawn mask has a box
    x = (mask.x_min + mask.x_max) // 2
    with Image.open(run.overlay.path) as overlay, Image.open(mask.file.path) as drawn:
        assert overlay.mode == "RGBA" and overlay.size == (run.image.width, run.image.height)
        # Inside a mask the overlay is a palette colour at half opacity; outside every mask
        # it is clear.
        column = [(colour_at(overlay, (x, y)), drawn.getpixel((x, y))) for y in range(drawn.height)]
    inside = [pixel for pixel, on in column if on]
    assert inside and all(p[:3] in PALETTE and p[3] == 128 for p in inside)
    if run.mask_count == 1:
        assert all(pixel == (0, 0, 0, 0) for pixel, on in column if not on)
    with Image.open(io.BytesIO(run.thumbnail.read())) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= 240


def test_the_same_seed_makes_the_same_history(photos: Path, settings, tmp_path: Path) -> None:
    seed_runs(40, users=3, seed=11, images_dir=photos, now=NOW)
    first = snapshot()
    Run.objects.all().delete()
    settings.MEDIA_ROOT = tmp_path / "media-2"  # the same file names again
    seed_runs(40, users=3, seed=11, images_dir=photos, now=NOW)
    assert snapshot() == first

    Run.objects.all().delete()
    settings.MEDIA_ROOT = tmp_path / "media-3"
    seed_runs(40, users=3, seed=12, images_dir=photos, now=NOW)
    other = snapshot()
    assert {r[0] for r in other}.isdisjoint({r[0] for r in first})
    assert [r[3:5] for r in other] != [r[3:5] for r in first]


def test_seeding_again_adds_runs_of_its_own(photos: Path) -> None:
    seed_runs(15, users=2, seed=1, images_dir=photos, now=NOW)
    report = seed_runs(15, users=2, seed=1, images_dir=photos, now=NOW)
    assert Run.objects.count() == 30
    assert report.users_created == []  # the teammates are there already
    assert SourceImage.objects.count() == 3  # images are stored once


@pytest.mark.parametrize("fast", [False, True])
def test_deleting_one_runs_files_leaves_every_other_runs_files(photos: Path, fast: bool) -> None:
    report = seed_runs(60, users=2, seed=3, images_dir=photos, fast=fast, now=NOW)
    assert (report.linked > 0) is fast
    runs = list(Run.objects.filter(status=Run.Status.SUCCEEDED).prefetch_related("masks"))
    victim, others = runs[0], runs[1:]
    before = {r.thumbnail.name: r.thumbnail.read() for r in others}
    # What deleting a run does to its files (segmentation.deletion): remove its names.
    for name in [victim.thumbnail.name, victim.overlay.name] + [
        m.file.name for m in victim.masks.all()
    ]:
        assert name  # a succeeded run names every file it has
        default_storage.delete(name)
    for run in others:
        assert stored(run.overlay.name)
        assert all(stored(m.file.name) for m in run.masks.all())
        assert run.thumbnail.name
        with default_storage.open(run.thumbnail.name, "rb") as f:
            assert f.read() == before[run.thumbnail.name]


def test_the_command_reports_what_it_made(photos: Path) -> None:
    out = io.StringIO()
    call_command(
        "seed_runs", "12", "--users", "2", "--seed", "4", "--images", str(photos), stdout=out
    )
    text = out.getvalue()
    assert Run.objects.count() == 12
    assert "Made 12 runs" in text
    assert "Created teammates alice, bob. They cannot sign in" in text
    assert not Client().login(username="alice", password="")


def test_seeded_teammates_sign_in_only_with_the_password_given(photos: Path) -> None:
    out = io.StringIO()
    call_command(
        "seed_runs",
        "3",
        "--users",
        "1",
        "--images",
        str(photos),
        "--password",
        "pw-123456",
        stdout=out,
    )
    assert "Created teammates alice: sign in at /accounts/login/ as any of them" in out.getvalue()
    assert Client().login(username="alice", password="pw-123456")


def test_the_command_refuses_nonsense_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="N must be 0 or more"):
        call_command("seed_runs", "-3")
    with pytest.raises(CommandError, match="--users must be between 1 and 1000"):
        call_command("seed_runs", "3", "--users", "0")
    with pytest.raises(CommandError, match="no images folder"):
        call_command("seed_runs", "3", "--images", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommandError, match="no usable images"):
        call_command("seed_runs", "3", "--images", str(tmp_path / "empty"))
    assert Run.objects.count() == 0
