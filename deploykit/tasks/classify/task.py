"""The classification task: a classifier (CIFAR nets, torchvision, timm or your factory) on
image folders, digits or synthetic data; cross-entropy, top-1 and top-5; its stem and
classifier kept whole and float by default; one ONNX file of logits."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from deploykit.data import Loaders, build_loaders
from deploykit.distill import DistillObjective, Teacher, resolve_taps
from deploykit.distill.kd import kd_loss_fn
from deploykit.host.resources import check_fits
from deploykit.measure import Artifact, classifier_artifact, classifier_parity, top1_top5
from deploykit.models import check_forward
from deploykit.quant import resolve_keep_float
from deploykit.recipe import DistillSpec, ExportSpec, SensitivitySpec
from deploykit.tasks.base import DistillLoss, Graph, QuantGraph, TaskModel
from deploykit.tasks.classify.checks import recipe_problems
from deploykit.tasks.restore import load_model
from deploykit.train import Objective, evaluate

if TYPE_CHECKING:
    from deploykit.recipe import Recipe
    from deploykit.runtimes import Runner
    from deploykit.state import Candidate

__all__ = ["ClassifyTask"]


class ClassifyTask:
    """``task: classification``. Subclass it for a task whose model is a classifier-shaped
    network (one image batch in, one tensor out) with another loss, data or metric."""

    name = "classification"
    primary_metric = "top1_pct"
    stage_kinds: tuple[str, ...] = ("prune", "lowrank", "distill", "quantize")

    @property
    def objective(self) -> Objective:
        return Objective(metric=self.primary_metric)

    def build_model(self, recipe: Recipe, checkpoint: str | Path | None = None,
                    model: nn.Module | None = None) -> TaskModel:
        shape = (3, recipe.data.image_size, recipe.data.image_size)
        model, first_last = load_model(recipe.model, shape, checkpoint, model)
        return TaskModel(model, first_last, shape)

    def check_model(self, built: TaskModel, recipe: Recipe, limit_gb: float | None) -> None:
        """It runs on one input, fits the memory limit, and has the distill stages' taps."""
        check_forward(built.model, built.input_shape)
        check_fits(built.model, recipe, limit_gb)
        for spec in recipe.stages:
            if isinstance(spec, DistillSpec) and spec.losses.feature_terms():
                resolve_taps(built.model, spec.taps or None)
                if spec.hint_tap:
                    resolve_taps(built.model, [spec.hint_tap])

    def check_recipe(self, recipe: Recipe) -> list[str]:
        """What in the recipe belongs to a detector (:mod:`.checks`)."""
        return recipe_problems(recipe)

    def graphs(self, model: nn.Module, input_shape: tuple[int, int, int],
               first_last: tuple[str, str]) -> list[Graph]:
        """The whole model, its classifier's outputs whole."""
        return [Graph(model, input_shape, (first_last[1],))]

    def quant_graph(self, model: nn.Module, input_shape: tuple[int, int, int],
                    first_last: tuple[str, str]) -> QuantGraph:
        """The whole model; QAT distils from the float model (``qat.kd_alpha``)."""
        return QuantGraph(
            module=model,
            keep_float=lambda patterns: resolve_keep_float(model, patterns, first_last),
            calibration=lambda loader: [x for x, _ in loader],
            sensitivity_batches=first_batches, wrap=_same, reference=model, compared=_same,
            default_sensitivity=SensitivitySpec(),
            qat_loss=lambda q: kd_loss_fn(model, q.kd_alpha, q.kd_temperature,
                                          q.label_smoothing))

    def distill_loss(self, student: nn.Module, teachers: list[nn.Module], spec: DistillSpec,
                     loaders: Any) -> DistillLoss:
        """Hinton KD, cross-entropy and the feature terms (hint, attention, overhaul, FSP),
        their adapters sized from one training batch; several teachers are an ensemble."""
        teacher = Teacher(teachers, spec.teacher.image_size, spec.teacher.bn_train)
        example = next(iter(loaders.train))[0][:2]
        objective = DistillObjective(student, teacher, spec, example)
        terms = tuple(k for k in ("ce", "kd", "hint", "attention", "overhaul", "fsp")
                      if getattr(spec.losses, k))
        return DistillLoss(objective.loss, objective, terms, tuple(objective.notes), {
            "taps": objective.taps,
            "adapter_params": sum(p.numel() for p in objective.adapters.parameters())})

    def loaders(self, recipe: Recipe) -> Loaders:
        return build_loaders(recipe.data, recipe.seed, recipe.model.num_classes)

    def evaluate(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        return evaluate(model, loader)

    def score(self, runner: Runner, loader: Iterable) -> dict[str, float]:
        return top1_top5(runner, loader)

    def export(self, candidate: Candidate, loaders: Any, spec: ExportSpec, out_dir: Path,
               seed: int = 0) -> Artifact:
        """One ONNX file of logits, ``<name>.onnx``; timed on random batches."""
        return classifier_artifact(candidate, loaders.input_shape, spec, out_dir, seed)

    def parity(self, candidate: Candidate, artifact: Artifact, reference: Runner,
               runner: Runner, loaders: Any, spec: ExportSpec, seed: int = 0
               ) -> dict[str, Any]:
        return classifier_parity(candidate, artifact, reference, runner, loaders, spec, seed)

def _same(qm: nn.Module) -> nn.Module:
    return qm


def first_batches(loader: Iterable, samples: int) -> list[tuple[torch.Tensor, Any]]:
    """The loader's first batches, until they hold ``samples`` images."""
    out, n = [], 0
    for x, y in loader:
        out.append((x, y))
        n += len(x)
        if n >= samples:
            break
    return out
