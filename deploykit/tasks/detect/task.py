"""The detection task: a torchvision detector (or your factory's) on generated shapes or
COCO-format folders; its own training loss; COCO mAP; the network (backbone, neck, heads) is
what the techniques work on, its prediction convs kept whole; an end-to-end artifact (resize,
network, decode and NMS) timed beside its network alone (:mod:`.measure`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from deploykit.errors import ModelError
from deploykit.host.progress import log
from deploykit.measure import Artifact
from deploykit.recipe import DistillSpec, ExportSpec, SensitivitySpec
from deploykit.tasks.base import DistillLoss, Graph, QuantGraph, TaskModel
from deploykit.tasks.detect.checkpoint import load_detector
from deploykit.tasks.detect.checks import recipe_problems
from deploykit.tasks.detect.data import build_detection_loaders
from deploykit.tasks.detect.export import fixed_input_size
from deploykit.tasks.detect.loss import (
    ChenTerms,
    check_chen_model,
    chen_loss,
    detector_loss,
    hint_adapter,
)
from deploykit.tasks.detect.measure import (
    detector_artifact,
    detector_parity,
    runner_detections,
)
from deploykit.tasks.detect.metric import evaluate_detector, mean_average_precision
from deploykit.tasks.detect.models import (
    DetectorNetwork,
    detector_graphs,
    is_two_stage,
)
from deploykit.tasks.detect.network_quant import (
    detector_keep_float,
    head_keys,
    heads_only,
    network_batches,
    quantized_detector,
)
from deploykit.train import Objective

if TYPE_CHECKING:
    from deploykit.recipe import Recipe
    from deploykit.runtimes import Runner
    from deploykit.state import Candidate

__all__ = ["DetectTask"]

SENSITIVITY_IMAGES = 64   # default images for the SQNR ranking of a detector's layers


class DetectTask:
    """``task: detection``."""

    name = "detection"
    primary_metric = "map50_pct"
    stage_kinds: tuple[str, ...] = ("prune", "distill", "quantize")

    @property
    def objective(self) -> Objective:
        return Objective(detector_loss, evaluate_detector, self.primary_metric)

    def build_model(self, recipe: Recipe, checkpoint: str | Path | None = None,
                    model: nn.Module | None = None) -> TaskModel:
        size = recipe.data.image_size
        return TaskModel(load_detector(recipe.model, size, checkpoint, model), ("", ""),
                         (3, size, size))

    def check_model(self, built: TaskModel, recipe: Recipe, limit_gb: float | None) -> None:
        """The distill stages' Chen et al. terms can read its head. A detector's forward is
        checked by the stages' checks (each traces its network) and by the first training
        step."""
        for spec in recipe.stages:
            if isinstance(spec, DistillSpec) and spec.losses.detection_terms():
                check_chen_model(built.model, "student")

    def check_recipe(self, recipe: Recipe) -> list[str]:
        """What the detector path does not do, and classifier settings (:mod:`.checks`)."""
        return recipe_problems(recipe)

    def graphs(self, model: nn.Module, input_shape: tuple[int, int, int],
               first_last: tuple[str, str]) -> list[Graph]:
        """The network and, on a two-stage detector, its box head
        (:func:`.models.detector_graphs`). ``model`` is put in eval mode: its training forward
        needs targets."""
        model.eval()
        return detector_graphs(model, input_shape)

    def quant_graph(self, model: nn.Module, input_shape: tuple[int, int, int],
                    first_last: tuple[str, str]) -> QuantGraph:
        """The network (backbone, neck and heads) becomes INT8; the resize, anchors, box
        decoding and NMS stay float (:mod:`.network_quant`). The first conv and the heads'
        prediction convs are ``first`` and ``last``. Layers are ranked by the SQNR of the
        network's outputs; QAT fine-tunes with the detector's own loss.

        The INT8 network is exported between a float resize and a float decoding with fixed
        anchors, so a detector that keeps the aspect ratio (RetinaNet, FCOS) is set to resize
        every image to ``input_shape``'s square size, as SSD does: on square images that is
        what the float detector does too.

        Raises:
            ModelError: a two-stage detector, or one without anchors.
        """
        if is_two_stage(model) or not all(hasattr(model, a) for a in (
                "transform", "anchor_generator", "postprocess_detections")):
            raise ModelError(f"quantize on a detector: {type(model).__name__} is not a "
                             "single-stage detector with anchors (SSD, SSDlite, RetinaNet, "
                             "FCOS); INT8 of two-stage detectors (Faster R-CNN: proposals "
                             "between two networks) is not built: drop the quantize stage for it")
        size = input_shape[1]
        if fixed_input_size(model) is None:
            model.transform.fixed_size = (size, size)
            log(f"quantize: {type(model).__name__} keeps the aspect ratio; its INT8 candidate "
                f"resizes every image to {size}x{size} (data.image_size), as SSD does, so its "
                "anchors are fixed (the same on square images; non-square ones are stretched)")
        network = DetectorNetwork(model, with_features=True).eval()
        keys = head_keys(model, size)

        def sensitivity_batches(loader: Iterable, samples: int) -> list[tuple[Any, None]]:
            images = [im for ims, _ in loader for im in ims][:samples]
            return [(x, None) for x in network_batches(model, images)]

        return QuantGraph(
            module=network,
            keep_float=lambda patterns: detector_keep_float(network, patterns),
            calibration=lambda images: network_batches(model, list(images)),
            sensitivity_batches=sensitivity_batches,
            wrap=lambda qm: quantized_detector(model, qm, keys),
            reference=DetectorNetwork(model).eval(),
            compared=lambda qm: heads_only(qm, len(keys)),
            default_sensitivity=SensitivitySpec(metric="sqnr", samples=SENSITIVITY_IMAGES),
            qat_loss=lambda q: None, speed_check=False)

    def distill_loss(self, student: nn.Module, teachers: list[nn.Module], spec: DistillSpec,
                     loaders: Any) -> DistillLoss:
        """The detection loss plus Chen et al. (2017)'s terms from the teacher:
        ``det_soft_ce`` (class-weighted soft cross-entropy, mixed with the hard loss by
        ``mu = 1 - det_soft_ce``), ``det_bounded_reg`` (teacher-bounded regression) and
        ``det_hint`` (hint through a 1x1 adaptation layer); with none, plain fine-tuning."""
        teacher, w = teachers[0], spec.losses
        terms = ChenTerms(mu=1.0 - w.det_soft_ce, temperature=spec.temperature,
                          background_weight=spec.background_weight,
                          bounded_weight=w.det_bounded_reg, margin=spec.margin,
                          hint_weight=w.det_hint, hint_level=spec.hint_level)
        active = tuple(w.detection_terms())
        adapter = hint_adapter(student, teacher, loaders.input_shape[1], terms.hint_level) \
            if terms.hint_weight > 0 else None
        if not active:
            return DistillLoss(None, terms=("plain fine-tuning",))
        return DistillLoss(chen_loss(teacher, terms, adapter), adapter, active)

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

    def export(self, candidate: Candidate, loaders: Any, spec: ExportSpec, out_dir: Path,
               seed: int = 0) -> Artifact:
        """End to end, with its network alone beside it (:mod:`.measure`)."""
        return detector_artifact(candidate, loaders, spec, out_dir)

    def parity(self, candidate: Candidate, artifact: Artifact, reference: Runner,
               runner: Runner, loaders: Any, spec: ExportSpec, seed: int = 0
               ) -> dict[str, Any]:
        """Detections matched as sets (IoU >= 0.5, same label, score difference)."""
        return detector_parity(candidate, artifact, reference, runner, loaders, spec)
