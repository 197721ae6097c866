"""Compression stages. Each is ``run(state, loaders, spec) -> state`` registered by kind.

Stage modules are imported lazily by :func:`get_stage`, so importing deploykit stays cheap and
no stage imports another.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from deploykit.errors import RecipeError

__all__ = ["STAGE_MODULES", "get_stage"]

# kind -> module under deploykit.stages that defines run(state, loaders, spec)
STAGE_MODULES: dict[str, str] = {"prune": "prune", "lowrank": "lowrank",
                                 "distill": "distill", "quantize": "quantize"}


def get_stage(kind: str) -> ModuleType:
    """Return the module of stage ``kind``: ``run(state, loaders, spec)`` and optionally
    ``check(model, spec, first_last)``, which validates the spec before any training.

    Raises:
        RecipeError: no such stage.
    """
    if kind not in STAGE_MODULES:
        known = ", ".join(STAGE_MODULES) or "none"
        raise RecipeError(f"unknown stage {kind!r}; available: {known}")
    return importlib.import_module(f"deploykit.stages.{STAGE_MODULES[kind]}")
