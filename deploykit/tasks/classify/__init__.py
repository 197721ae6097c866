"""Image classification: the recipe's ``task: classification`` (the default)."""

from deploykit.tasks.classify.task import ClassifyTask

__all__ = ["ClassifyTask"]
