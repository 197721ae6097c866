"""The classification task: a classifier (CIFAR nets, torchvision, timm or your factory) on
image folders, digits or synthetic data; cross-entropy, top-1 and top-5; its stem and
classifier kept whole and float by default; one ONNX file of logits."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from deploykit.data import Loaders, build_loaders
from deploykit.host.resources import check_fits
from deploykit.measure import measure_candidates, top1_top5
from deploykit.models import check_forward
from deploykit.tasks.base import TaskModel
from deploykit.tasks.restore import load_model
from deploykit.train import Objective, evaluate

if TYPE_CHECKING:
    from deploykit.recipe import Recipe
    from deploykit.report import CandidateReport
    from deploykit.runtimes import Runner
    from deploykit.state import Candidate

__all__ = ["ClassifyTask"]


class ClassifyTask:
    """``task: classification``. Subclass it for a task whose model is a classifier-shaped
    network (one image batch in, one tensor out) with another loss, data or metric."""

    name = "classification"
    primary_metric = "top1_pct"
    stage_kinds: tuple[str, ...] = ("prune", "lowrank", "distill", "quantize")
    drivers: dict[str, str] = {}

    @property
    def objective(self) -> Objective:
        return Objective(metric=self.primary_metric)

    def build_model(self, recipe: Recipe, checkpoint: str | Path | None = None) -> TaskModel:
        shape = (3, recipe.data.image_size, recipe.data.image_size)
        model, first_last = load_model(recipe.model, shape, checkpoint)
        return TaskModel(model, first_last, shape)

    def check_model(self, built: TaskModel, recipe: Recipe, limit_gb: float | None) -> None:
        check_forward(built.model, built.input_shape)
        check_fits(built.model, recipe, limit_gb)

    def loaders(self, recipe: Recipe) -> Loaders:
        return build_loaders(recipe.data, recipe.seed, recipe.model.num_classes)

    def evaluate(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        return evaluate(model, loader)

    def score(self, runner: Runner, loader: Iterable) -> dict[str, float]:
        return top1_top5(runner, loader)

    def measure(self, candidates: list[Candidate], loaders: Any, recipe: Recipe, out: Path
                ) -> list[CandidateReport]:
        return measure_candidates(candidates, loaders, recipe.export, recipe.bench, out,
                                  recipe.seed, score=self.score, metric=self.primary_metric)
