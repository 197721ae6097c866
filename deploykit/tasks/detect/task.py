"""The detection task: a torchvision detector (or your factory's) on generated shapes or
COCO-format folders; its own training loss; COCO mAP; the network (backbone, neck, heads) is
what the techniques work on, its prediction convs kept whole; an end-to-end artifact (resize,
network, decode and NMS) timed beside its network alone (:mod:`.measure`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from deploykit.tasks.base import TaskModel
from deploykit.tasks.detect.checkpoint import load_detector
from deploykit.tasks.detect.data import build_detection_loaders
from deploykit.tasks.detect.loss import detector_loss
from deploykit.tasks.detect.measure import measure_detectors, runner_detections
from deploykit.tasks.detect.metric import evaluate_detector, mean_average_precision
from deploykit.train import Objective

if TYPE_CHECKING:
    from deploykit.recipe import Recipe
    from deploykit.report import CandidateReport
    from deploykit.runtimes import Runner
    from deploykit.state import Candidate

__all__ = ["DetectTask"]


class DetectTask:
    """``task: detection``."""

    name = "detection"
    primary_metric = "map50_pct"
    stage_kinds: tuple[str, ...] = ("prune", "distill", "quantize")
    drivers: dict[str, str] = {k: f"deploykit.tasks.detect.{k}" for k in stage_kinds}

    @property
    def objective(self) -> Objective:
        return Objective(detector_loss, evaluate_detector, self.primary_metric)

    def build_model(self, recipe: Recipe, checkpoint: str | Path | None = None) -> TaskModel:
        size = recipe.data.image_size
        return TaskModel(load_detector(recipe.model, size, checkpoint), ("", ""),
                         (3, size, size))

    def check_model(self, built: TaskModel, recipe: Recipe, limit_gb: float | None) -> None:
        """Nothing beyond building it: a detector's forward is checked by the stages' checks
        (each traces its network) and by the first training step."""

    def loaders(self, recipe: Recipe) -> Any:
        return build_detection_loaders(recipe.data, recipe.seed, recipe.model.num_classes)

    def evaluate(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        return evaluate_detector(model, loader)

    def score(self, runner: Runner, loader: Iterable) -> dict[str, float]:
        """mAP of an end-to-end artifact (one image in, boxes, scores and labels out)."""
        images, targets = [], []
        for ims, ts in loader:
            images += ims
            targets += ts
        m = mean_average_precision(runner_detections(runner, images), targets)
        return {"map_pct": m.map_pct, "map50_pct": m.map50_pct}

    def measure(self, candidates: list[Candidate], loaders: Any, recipe: Recipe, out: Path
                ) -> list[CandidateReport]:
        return measure_detectors(candidates, loaders, recipe.export, recipe.bench, out)
