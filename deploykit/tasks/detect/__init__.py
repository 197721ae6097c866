"""Object detection: the recipe's ``task: detection``."""

from deploykit.tasks.detect.task import DetectTask

__all__ = ["DetectTask"]
