"""deploykit: prune, distil, quantize, export and benchmark PyTorch vision models from one recipe.

Public API (importing it has no side effects and loads no optional backend; the names load
when first used)::

    import deploykit
    report = deploykit.run("recipes/quickstart.yaml", output="runs/qs")   # a path
    report = deploykit.run({"model": {...}, "data": {...}, ...})          # or a dict
    report = deploykit.run(recipe, model=my_module)                       # your model object
    recipe = deploykit.load_recipe("recipes/quickstart.yaml")             # validated Recipe

- ``run(recipe, output=None, resume=False, gate=False, model=None) -> Report``: the whole
  chain, as ``deploykit run`` does; ``recipe`` is a path, a dict or a ``Recipe``.
- ``load_recipe(path) -> Recipe``: read and validate a recipe file.
- ``Recipe``, ``Report`` (``Report.load("runs/qs/report.json")``), ``DeployKitError`` (every
  problem you can fix: a bad recipe, a missing file, an unavailable backend).

See docs/api.md for worked examples (run by the test suite).
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


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
