"""The compare page (/runs/compare/?ids=…): 2 to 4 runs side by side with the inputs that differ
marked, and every kind of bad request answered 400 with its reason. Real database rows, real
image and mask files; one case with runs the stand-in finished through the real worker."""

from __future__ import annotations

import io
import json
import uuid
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.utils import timezone
from PIL import Image, ImageDraw

from segmentation.models import Mask, Run
from tests.factories import drain, settled, stored_image, submit

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_polling")]

OPTIONS = {
    "apply_mask": True,
    "return_multiple_masks": False,
    "max_masks": 3,
    "include_scores": True,
    "include_boxes": True,
    "sync_mode": False,
    "output_format": "png",
}
FIELDS = [
    "image",
    "prompt",
    "point_prompts",
    "box_prompts",
    *OPTIONS,
    "metadata",
]


def make_run(
    owner,
    *,
    image: str = "cat.jpg",
    masks: int = 2,
    metadata: dict[str, Any] | None = None,
    status: str = Run.Status.SUCCEEDED,
    **fields: Any,
) -> Run:
    """A finished run on one of the test photos, with `masks` real mask PNGs (ellipses)."""
    source = stored_image(image)
    run = Run.objects.create(
        owner=owner,
        image=source,
        input={"prompt": "cat", "point_prompts": [], "box_prompts": [], **OPTIONS, **fields},
        metadata=metadata,
        status=status,
        artifacts=Run.Artifacts.DONE if masks else Run.Artifacts.NONE,
    )
    w, h = source.width, source.height
    for index in range(masks):
        # Side by side, apart: instance n's centre shows instance n's colour.
        x = 10 + index * (w // 4)
        box = (x, 10, x + w // 5, 10 + h // 2)
        im = Image.new("1", (w, h), 0)
        ImageDraw.Draw(im).ellipse((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        row = Mask(run=run, index=index, score=0.9 - index / 10)
        row.x_min, row.y_min, row.x_max, row.y_max = box
        row.file.save(f"{run.pk}-{index}.png", ContentFile(buf.getvalue()), save=False)
        row.area = im.histogram()[255]
        row.copied_at = timezone.now()
        row.save()
    return run


class Page(HTMLParser):
    """What the tests read from the page: the input rows (class, text) and the run columns."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Any]] = {}
        self.columns: list[str] = []
        self.viewers = 0
        self._row: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        field = a.get("data-field")
        if tag == "tr" and field:
            self._row = field
            self.rows[field] = {"class": (a.get("class") or "").split(), "text": ""}
        if tag == "article" and a.get("data-run"):
            self.columns.append(a["data-run"] or "")
        if a.get("class") and "sam3-viewer" in (a.get("class") or "").split():
            self.viewers += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row:
            self.rows[self._row]["text"] += data

    def differing(self) -> set[str]:
        return {name for name, row in self.rows.items() if "differs" in row["class"]}

    def text(self, field: str) -> str:
        return " ".join(self.rows[field]["text"].split())


def compare(client: Client, *ids: Any, status: int = 200):
    query = "&".join(f"ids={i}" for i in ids)
    response = client.get(f"/runs/compare/?{query}")
    assert response.status_code == status, response.content.decode()[:3000]
    return response


def read(response) -> Page:
    return Page(response.content.decode())


def test_two_runs_side_by_side_with_the_differing_inputs_marked(signed_in: Client, owner) -> None:
    a = make_run(owner, prompt="cat", max_masks=3, point_prompts=[{"x": 10, "y": 20, "label": 1}])
    b = make_run(
        owner,
        prompt="kitten",
        max_masks=5,
        masks=3,
        point_prompts=[{"x": 10, "y": 20, "label": 1}],
    )
    response = compare(signed_in, a.id, b.id)
    page = read(response)
    html = response.content.decode()
    assert page.columns == [str(a.id), str(b.id)]
    # Every input has its row; exactly the two that differ are marked, with the word too.
    assert set(page.rows) == set(FIELDS)
    assert page.differing() == {"prompt", "max_masks"}
    for name in page.rows:
        marked = "differs" in page.text(name).split()
        assert marked == (name in {"prompt", "max_masks"}), name
        assert ("same" in page.rows[name]["class"]) == (not marked), name
    assert "kitten" in page.text("prompt") and "cat" in page.text("prompt")
    assert page.text("point_prompts").count("+ (10, 20)") == 2
    assert "All 2 runs were made on the same image." in html
    assert "different images" not in html
    assert 'href="#input-prompt">Text prompt</a>' in html
    # One viewer per run with masks, each reading its own run's data; the files linked once.
    assert page.viewers == 2
    for run in (a, b):
        assert f'data-viewer="/runs/{run.id}/viewer.json"' in html
        assert f'href="/runs/{run.id}/"' in html
    assert html.count("sam3web/viewer.js") == 1
    assert html.count("data-viewer-sync-toggle") == 1
    assert 'class="mask-count">2<' in html and 'class="mask-count">3<' in html


def test_three_runs_on_different_images_say_so(signed_in: Client, owner) -> None:
    a = make_run(owner, image="cat.jpg", metadata={"project": "demo"})
    b = make_run(owner, image="coffee.jpg", metadata={"project": "demo"})
    c = make_run(owner, image="cat.jpg", metadata={"project": "other"})
    response = compare(signed_in, a.id, b.id, c.id)
    page = read(response)
    html = response.content.decode()
    assert page.columns == [str(a.id), str(b.id), str(c.id)]
    assert page.differing() == {"image", "metadata"}
    assert "differs" in page.text("image").split()
    assert "cat.jpg" in page.text("image") and "coffee.jpg" in page.text("image")
    assert "These runs were made on 2 different images: some share one." in html
    assert '"project": "other"' in page.text("metadata")
    assert '<span class="differs-tag">different images</span>' in html


def test_four_runs_keep_the_order_given_and_show_results_facts(signed_in: Client, owner) -> None:
    paid = make_run(owner, prompt="cat")
    paid.cost, paid.duration_ms = Decimal("0.0042"), 1234
    paid.save()
    estimated = make_run(owner, prompt="cat")  # succeeded, Runflow's cost not in yet
    failed = make_run(owner, prompt="cat", masks=0, status=Run.Status.FAILED)
    waiting = make_run(owner, prompt="cat", masks=0, status=Run.Status.RUNNING)
    order = [waiting, paid, failed, estimated]
    response = compare(signed_in, *(r.id for r in order))
    page = read(response)
    html = response.content.decode()
    assert page.columns == [str(r.id) for r in order]
    assert page.differing() == set()
    assert "Every input is the same." in html
    # Runs without masks: the image and the status, no viewer.
    assert page.viewers == 2
    assert "No masks to show: failed." in html
    assert "No masks yet: running." in html
    costs = [
        " ".join(part.split("</dd>")[0].split()) for part in html.split('<dd class="cost">')[1:]
    ]
    assert costs == [
        '~$0.005 <span class="estimate">estimate</span>',
        "$0.0042",
        "not billed",
        '~$0.005 <span class="estimate">estimate</span>',
    ]
    assert "1234 ms" in html
    assert html.count("ada") >= 4  # the owner, in every column


def test_runs_finished_by_the_stand_in_compare_with_their_masks(signed_in: Client, standin) -> None:
    standin.complete_after = 0.1
    runs = []
    for prompt, max_masks in (("coins", "2"), ("coins", "4")):
        run = submit(signed_in, prompt=prompt, return_multiple_masks="on", max_masks=max_masks)
        drain(settled(run))
        runs.append(Run.objects.get(pk=run.pk))
    assert [r.masks.count() for r in runs] == [2, 4]
    page = read(compare(signed_in, *(r.id for r in runs)))
    assert page.differing() == {"max_masks"}
    assert page.viewers == 2


def test_duplicates_count_once(signed_in: Client, owner) -> None:
    runs = [make_run(owner, masks=0) for _ in range(4)]
    a = runs[0]
    # Five values, four runs: the same run twice (once in capitals, once without dashes).
    ids = [a.id, runs[1].id, str(a.id).upper(), runs[2].id, runs[3].id, a.id.hex]
    page = read(compare(signed_in, *ids))
    assert page.columns == [str(r.id) for r in runs]
    # Only one run, twice: fewer than two to compare.
    response = compare(signed_in, a.id, a.id, status=400)
    assert "Only one run was chosen" in response.content.decode()


@pytest.mark.parametrize(
    ("ids", "reason"),
    [
        ([], "No run was chosen: choose 2 to 4 different runs to compare."),
        (["A"], "Only one run was chosen: choose 2 to 4 different runs to compare."),
        (["A", "B", "C", "D", "E"], "5 runs were chosen: at most 4 can be compared at once."),
        (["A", "not-a-run"], "Not a run id: “not-a-run”."),
        (["A", "12345", "B"], "Not a run id: “12345”."),
        (["A", "B", "<script>x</script>"], "Not a run id: “&lt;script&gt;x&lt;/script&gt;”."),
        (["A", "MISSING"], "No run has the id MISSING: it may have been deleted."),
        (["A"] + ["x"] * 60, "61 ids were given: choose 2 to 4 runs."),
    ],
    ids=["none", "one", "five", "malformed", "number", "markup", "unknown", "flood"],
)
def test_a_bad_request_is_a_400_with_the_reason(
    signed_in: Client, owner, ids: list[str], reason: str
) -> None:
    runs = {name: make_run(owner, masks=0) for name in "ABCDE"}
    missing = uuid.uuid4()
    values = [str(runs[v].id) if v in runs else str(missing) if v == "MISSING" else v for v in ids]
    response = compare(signed_in, *values, status=400)
    html = response.content.decode()
    assert reason.replace("MISSING", str(missing)) in html
    assert "These runs cannot be compared" in html
    assert 'href="/runs/"' in html  # back to history
    assert "<script>x" not in html
    assert Page(html).columns == []


def test_a_long_malformed_id_is_shortened_in_the_message(signed_in: Client, owner) -> None:
    a = make_run(owner, masks=0)
    response = compare(signed_in, a.id, "z" * 5000, status=400)
    html = response.content.decode()
    assert "Not a run id: “" + "z" * 39 + "…”" in html
    assert "z" * 41 not in html


def test_several_unknown_ids_are_all_named(signed_in: Client, owner) -> None:
    gone = [uuid.uuid4(), uuid.uuid4()]
    a = make_run(owner, masks=0)
    html = compare(signed_in, gone[0], a.id, gone[1], status=400).content.decode()
    assert f"No runs have the ids {gone[0]}, {gone[1]}: they may have been deleted." in html


def test_a_person_not_signed_in_is_sent_to_sign_in(client: Client, owner) -> None:
    a, b = make_run(owner, masks=0), make_run(owner, masks=0)
    response = client.get(f"/runs/compare/?ids={a.id}&ids={b.id}")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/runs/compare/")
    # Nothing about the runs is given away, even for bad ids.
    assert client.get("/runs/compare/?ids=nonsense").status_code == 302


def test_a_teammate_sees_runs_of_others(client: Client, owner, django_user_model) -> None:
    a, b = make_run(owner, masks=0), make_run(owner, masks=0)
    bob = django_user_model.objects.create_user("bob", password="another horse battery")
    client.force_login(bob)
    page = read(compare(client, a.id, b.id))
    assert page.columns == [str(a.id), str(b.id)]


def test_only_get(signed_in: Client, owner) -> None:
    a, b = make_run(owner, masks=0), make_run(owner, masks=0)
    response = signed_in.post("/runs/compare/", {"ids": [str(a.id), str(b.id)]})
    assert response.status_code == 405


def test_inputs_beyond_the_schema_and_missing_options_are_shown(signed_in: Client, owner) -> None:
    a = make_run(owner, masks=0, text_prompt="cat")
    b = make_run(owner, masks=0)
    b.input = {k: v for k, v in b.input.items() if k != "sync_mode"}
    b.save()
    page = read(compare(signed_in, a.id, b.id))
    assert page.differing() == {"text_prompt", "sync_mode"}
    assert "not set" in page.text("sync_mode")
    assert json.dumps("cat") in page.text("text_prompt")
