"""Engines: the services (or, later, local models) that run SAM 3 for sam3web.

Each engine is a package here with one class implementing ``base.Engine``; this module is the
registry. It imports no engine until one is asked for, so any module may import the registry
without pulling in every engine's client (healthchecks keeps its integrations the same way).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from segmentation.engines.base import Engine
    from segmentation.models import Run

ENGINES = {
    "runflow": "segmentation.engines.runflow.engine.RunflowEngine",
}
DEFAULT = "runflow"


@functools.cache
def get(name: str = DEFAULT) -> Engine:
    """The engine called ``name`` (a Run's ``engine``); KeyError for one that does not exist."""
    engine: Engine = import_string(ENGINES[name])()
    return engine


def for_run(run: Run) -> Engine:
    return get(run.engine)
