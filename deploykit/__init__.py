"""deploykit: prune, distil, quantize, export and benchmark PyTorch vision models from one recipe.

Public API (importing it has no side effects and loads no optional backend)::

    from deploykit import load_recipe, run
    report = run(load_recipe("recipes/quickstart.yaml"), output="runs/qs")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["DeployKitError", "Recipe", "Report", "__version__", "load_recipe", "run"]

if TYPE_CHECKING:
    from deploykit.errors import DeployKitError
    from deploykit.pipeline import run
    from deploykit.recipe import Recipe, load_recipe
    from deploykit.report import Report

_LAZY = {
    "DeployKitError": "deploykit.errors",
    "Recipe": "deploykit.recipe",
    "load_recipe": "deploykit.recipe",
    "run": "deploykit.pipeline",
    "Report": "deploykit.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deploykit' has no attribute {name!r}")
