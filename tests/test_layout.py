"""The shape of the code: no module imports another that (through others) imports it back, the
engines stay behind their registry, and nothing in the repository reaches outside it."""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.sample_images import ROOT

PACKAGES = ("sam3web", "accounts", "segmentation", "runflow_standin")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def top_level_imports(path: Path, name: str, known: dict[str, Path]) -> Iterator[str]:
    """The first-party modules a module imports when it is imported (not inside functions,
    not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # `from a import b` imports a.b when b is a module, else a.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                yield target


def test_no_module_imports_itself_back() -> None:
    known = modules()
    graph = {name: set(top_level_imports(path, name, known)) for name, path in known.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(" → ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_only_the_runflow_engine_imports_runflow() -> None:
    # A second engine must not need `if engine == ...` elsewhere: Runflow's client, callbacks
    # and output parsing are reached only through its package and the registry.
    known = modules()
    outside = {
        name: sorted(t for t in top_level_imports(path, name, known) if ".runflow" in t)
        for name, path in known.items()
        if not name.startswith("segmentation.engines.runflow") and name.startswith("segmentation")
    }
    # seed_runs writes request bodies the way the client builds them (demo data only).
    assert {name: found for name, found in outside.items() if found} == {
        "segmentation.seed": ["segmentation.engines.runflow.client"]
    }


def test_nothing_in_the_repository_reaches_outside_it() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".html", ".js", ".css", ".toml", ".txt", "") or (
            not path.is_file()
        ):
            continue
        text = path.read_text(errors="replace")
        # Spelled in two parts, so this file does not find itself.
        for needle in (".." + "/shared", "/" + "work/"):
            if needle in text:
                offenders.append(f"{name}: {needle}")
    assert offenders == []
