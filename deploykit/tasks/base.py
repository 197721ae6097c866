"""What a task is: the hooks the one pipeline, the stage drivers and the measurement ask a task
for, where tasks differ (classification, detection, or one of yours).

A task is an object with these attributes and methods; :class:`deploykit.tasks.classify.
ClassifyTask` is the reference one, and a new task usually subclasses it or
:class:`~deploykit.tasks.detect.DetectTask` and overrides what differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

if TYPE_CHECKING:
    from deploykit.recipe import Recipe
    from deploykit.report import CandidateReport
    from deploykit.runtimes import Runner
    from deploykit.state import Candidate
    from deploykit.train import Objective

__all__ = ["Task", "TaskModel"]


@dataclass(frozen=True)
class TaskModel:
    """A task's model as the pipeline starts from it: the module, the names of the layers the
    techniques keep whole and float by default (stem and head; ``""`` where a task has none)
    and the shape of one input image."""

    model: nn.Module
    first_last: tuple[str, str]
    input_shape: tuple[int, int, int]


class Task(Protocol):
    """The hooks of a task (see the module notes).

    Attributes:
        name: the recipe's ``task:`` value it is registered under.
        primary_metric: the metric candidates are judged by (``top1_pct``, ``map50_pct``):
            a key of :meth:`evaluate`'s and :meth:`score`'s results, in percent.
        stage_kinds: the stage kinds it supports; a recipe naming another is refused at load.
        drivers: stage kind -> the module that runs it for this task, where it is not the
            technique's own driver ``deploykit.stages.<kind>``.
        objective: its training loss, evaluator and tracked metric (``fit`` takes it).
    """

    name: str
    primary_metric: str
    stage_kinds: tuple[str, ...]
    drivers: dict[str, str]

    @property
    def objective(self) -> Objective: ...

    def build_model(self, recipe: Recipe, checkpoint: str | Path | None = None) -> TaskModel:
        """The recipe's model, with ``checkpoint`` (default ``model.checkpoint``) restored."""

    def check_model(self, built: TaskModel, recipe: Recipe, limit_gb: float | None) -> None:
        """Refuse, before any training, a model that cannot run this recipe."""

    def loaders(self, recipe: Recipe) -> Any:
        """The recipe's data: ``train``, ``val``, ``calib`` loaders and ``input_shape``."""

    def evaluate(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        """Its metrics of the PyTorch ``model`` on ``loader``."""

    def score(self, runner: Runner, loader: Iterable) -> dict[str, float]:
        """Its metrics of an exported artifact run by ``runner`` on ``loader``."""

    def measure(self, candidates: list[Candidate], loaders: Any, recipe: Recipe, out: Path
                ) -> list[CandidateReport]:
        """Export, check parity, score and time every candidate."""
