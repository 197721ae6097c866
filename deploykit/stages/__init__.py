"""Compression stages: thin drivers, each ``run(state, loaders, spec) -> state``.

The stage of kind ``K`` is the module ``deploykit.stages.K``; the kinds themselves, with their
settings and placement rules, are :data:`deploykit.recipe.STAGE_KINDS`. Stage modules are
imported lazily by :func:`get_stage`, so importing deploykit stays cheap and no stage imports
another.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from deploykit.errors import RecipeError
from deploykit.recipe import STAGE_KINDS

__all__ = ["get_stage"]


def get_stage(kind: str) -> ModuleType:
    """Return the module of stage ``kind``: ``run(state, loaders, spec)`` and optionally
    ``check(model, spec, first_last, input_shape, task)``, which validates the spec against the
    model before any training. A driver asks the state's task for what differs between tasks.

    Raises:
        RecipeError: no such stage.
    """
    if kind not in STAGE_KINDS:
        raise RecipeError(f"unknown stage {kind!r}; available: {', '.join(STAGE_KINDS)}")
    return importlib.import_module(f"deploykit.stages.{kind}")
