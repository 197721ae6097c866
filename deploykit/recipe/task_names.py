"""The names a recipe's ``task:`` may take. deploykit's own tasks are here from the start; a
task registered at run time (``deploykit.tasks.register_task``) adds its name, so the recipe
schema accepts it without a change to deploykit."""

from __future__ import annotations

__all__ = ["add_task_name", "task_names"]

_NAMES: dict[str, str] = {
    "classification": "an image classifier, measured on top-1",
    "detection": "a torchvision detector on box-annotated data (data.kind shapes or coco), "
                 "measured on mAP",
}


def task_names() -> tuple[str, ...]:
    """Every task name a recipe may give."""
    return tuple(_NAMES)


def add_task_name(name: str, description: str) -> None:
    """Let recipes name task ``name`` (the task registry calls this)."""
    _NAMES.setdefault(name, description)
