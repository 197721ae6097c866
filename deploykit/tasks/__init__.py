"""Tasks: what differs between classification, detection and the tasks to come, behind one
interface (:class:`~deploykit.tasks.base.Task`), one folder per task, registered by the
recipe's ``task:`` name.

Example:
    >>> from deploykit.tasks import get_task
    >>> get_task("detection").primary_metric
    'map50_pct'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from deploykit.errors import RecipeError
from deploykit.recipe.task_names import add_task_name, task_names

if TYPE_CHECKING:
    from deploykit.tasks.base import (
        Artifact,
        DistillLoss,
        Graph,
        QuantGraph,
        Task,
        TaskModel,
        replay_graphs,
    )

__all__ = ["Artifact", "DistillLoss", "Graph", "QuantGraph", "Task", "TaskModel", "get_task",
           "register_task", "replay_graphs", "task_of"]

# the interface's types, imported when first used: a recipe's checks (plain functions in
# tasks/<task>/checks.py) run as it validates, without loading torch
_BASE = ("Artifact", "DistillLoss", "Graph", "QuantGraph", "Task", "TaskModel", "replay_graphs")


def __getattr__(name: str) -> Any:
    if name in _BASE:
        return getattr(importlib.import_module("deploykit.tasks.base"), name)
    raise AttributeError(f"module 'deploykit.tasks' has no attribute {name!r}")


# deploykit's own tasks, imported when first asked for
_BUILTIN = {"classification": "deploykit.tasks.classify.task:ClassifyTask",
            "detection": "deploykit.tasks.detect.task:DetectTask"}
_REGISTERED: dict[str, Task] = {}


def register_task(task: Task, description: str = "") -> Task:
    """Make ``task`` the one recipes name with ``task: <task.name>``.

    Raises:
        ValueError: the name is taken (deploykit's own or registered before).
    """
    if task.name in _BUILTIN or task.name in _REGISTERED:
        raise ValueError(f"task {task.name!r} is already registered")
    _REGISTERED[task.name] = task
    add_task_name(task.name, description or f"registered task {task.name}", task.check_recipe)
    return task


def get_task(name: str) -> Task:
    """The task registered as ``name``.

    Raises:
        RecipeError: no such task, listing the ones there are.
    """
    if name not in _REGISTERED and name in _BUILTIN:
        module, _, cls = _BUILTIN[name].partition(":")
        _REGISTERED[name] = getattr(importlib.import_module(module), cls)()
    if name not in _REGISTERED:
        raise RecipeError(f"unknown task {name!r}; available: {', '.join(task_names())}")
    return _REGISTERED[name]


def task_of(state: Any, default: str = "classification") -> Task:
    """The task a stage works for: the pipeline state's, or task ``default`` for a state
    built without one (a stage driven directly, as the benchmarks do)."""
    return state.task if state.task is not None else get_task(default)
