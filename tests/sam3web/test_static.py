"""The viewer's ES modules after collectstatic, as production serves them: every relative
import in a hashed module names another hashed module that was collected, so a page never
mixes files from two deploys (sam3web/storage.py)."""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.sample_images import ROOT

ENTRY = "sam3web/viewer.js"
SOURCES = ROOT / "static"
# `import ... from "x"`, `export ... from "x"` and `import "x"`: the module specifier.
SPECIFIER = re.compile(r"""(?:\bfrom|\bimport)\s*["']([^"']+)["']""")


def specifiers(text: str) -> list[str]:
    return SPECIFIER.findall(text)


@pytest.fixture
def collected(settings, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """collectstatic into a fresh folder with the production storage; the root and the
    manifest's paths (source name → hashed name)."""
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "sam3web.storage.StaticStorage"},
    }
    call_command("collectstatic", interactive=False, verbosity=0)
    manifest = json.loads((settings.STATIC_ROOT / "staticfiles.json").read_text())
    return settings.STATIC_ROOT, manifest["paths"]


def test_hashed_viewer_modules_import_hashed_modules(collected) -> None:
    root, paths = collected
    modules = sorted(n for n in paths if n == ENTRY or n.startswith("sam3web/viewer/"))
    modules = [n for n in modules if n.endswith(".js")]
    sources = sorted(
        p.relative_to(SOURCES).as_posix() for p in (SOURCES / "sam3web/viewer").glob("*.js")
    )
    assert modules == sorted([ENTRY, *sources])
    hashed = set(paths.values())

    reached = {ENTRY}
    for name in modules:
        text = (root / paths[name]).read_text()
        found = specifiers(text)
        # As many imports as in the source: none was left out of the rewriting.
        assert len(found) == len(specifiers((SOURCES / name).read_text())), name
        for spec in found:
            assert spec.startswith("./"), (name, spec)
            target = posixpath.normpath(posixpath.join(posixpath.dirname(paths[name]), spec))
            assert target in hashed and target not in paths, (name, spec)
            assert (root / target).is_file(), (name, spec)
            reached.add(next(n for n, h in paths.items() if h == target))
    # The entry leads to every module (its own imports and theirs).
    assert reached == set(modules)


def test_the_entry_names_every_module_itself(collected) -> None:
    """So that the browser asks for all of them at once, not one level of imports at a time."""
    root, paths = collected
    text = (root / paths[ENTRY]).read_text()
    named = {posixpath.normpath(posixpath.join("sam3web", s)) for s in specifiers(text)}
    assert named == {paths[n] for n in paths if n.startswith("sam3web/viewer/")}


def storage_backend(tmp_path: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SAM3WEB_", "DEBUG"))}
    clean.update({"DJANGO_SETTINGS_MODULE": "sam3web.settings", "SAM3WEB_DATA_DIR": str(tmp_path)})
    clean.update(env)
    probe = "from django.conf import settings; print(settings.STORAGES['staticfiles']['BACKEND'])"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_production_uses_the_storage_that_hashes_imports(tmp_path: Path) -> None:
    assert storage_backend(tmp_path) == "sam3web.storage.StaticStorage"
    assert storage_backend(tmp_path, SAM3WEB_STATIC_MANIFEST="0") == (
        "django.contrib.staticfiles.storage.StaticFilesStorage"
    )


def test_the_page_preloads_every_viewer_module() -> None:
    partial = (ROOT / "templates" / "segmentation" / "_viewer_assets.html").read_text()
    preloaded = set(re.findall(r"""rel="modulepreload" href="\{% static '([^']+)' %\}""", partial))
    modules = {f"sam3web/viewer/{p.name}" for p in (SOURCES / "sam3web" / "viewer").glob("*.js")}
    assert preloaded == modules
