"""The names a recipe's ``task:`` may take, and each task's recipe checks. deploykit's own
tasks are here from the start; a task registered at run time
(``deploykit.tasks.register_task``) adds its name and checks, so the recipe schema accepts it
without a change to deploykit.

A task's checks say what in a recipe it cannot run (``Task.check_recipe``). The recipe
validates with them as it loads, so a recipe that does not fit its task fails before any
work, naming the key. deploykit's own tasks name theirs as ``"module:function"`` (plain
functions of the typed recipe, imported when a recipe of that task loads), as the runtime
table names its runner factories.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["add_task_name", "task_names", "task_problems"]

Checks = Callable[[Any], list[str]]

_NAMES: dict[str, str] = {
    "classification": "an image classifier, measured on top-1",
    "detection": "a torchvision detector on box-annotated data (data.kind shapes or coco), "
                 "measured on mAP",
}
_CHECKS: dict[str, str | Checks] = {
    "classification": "deploykit.tasks.classify.checks:recipe_problems",
    "detection": "deploykit.tasks.detect.checks:recipe_problems",
}


def task_names() -> tuple[str, ...]:
    """Every task name a recipe may give."""
    return tuple(_NAMES)


def add_task_name(name: str, description: str, checks: Checks | None = None) -> None:
    """Let recipes name task ``name`` (the task registry calls this), validated by
    ``checks`` (recipe -> problems)."""
    _NAMES.setdefault(name, description)
    if checks is not None:
        _CHECKS.setdefault(name, checks)


def task_problems(recipe: Any) -> list[str]:
    """What in ``recipe`` its task cannot run (empty when it all fits or the task has no
    checks)."""
    checks = _CHECKS.get(recipe.task)
    if isinstance(checks, str):
        module, _, function = checks.partition(":")
        checks = getattr(importlib.import_module(module), function)
    return [] if checks is None else list(checks(recipe))
