"""What a task is: the hooks the one pipeline, the one driver per technique and the one
measurement loop ask a task for, where tasks differ (classification, detection, or one of
yours).

A task is an object with three attributes (name, primary metric, stage kinds) and twelve
hooks: the model (:meth:`~Task.build_model`, :meth:`~Task.check_model`), the recipe's checks,
the data, the training objective, evaluation, the graphs pruning rewrites, the graph that
becomes INT8, the distillation loss, export, parity and the score of an artifact.
:class:`deploykit.tasks.classify.task.ClassifyTask` is the reference one; a new task usually
subclasses it or :class:`deploykit.tasks.detect.task.DetectTask` and overrides what differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from deploykit.measure import Artifact
from deploykit.prune import replay_pruning

if TYPE_CHECKING:
    from deploykit.quant import QuantizedModel
    from deploykit.recipe import DistillSpec, ExportSpec, QatSpec, Recipe, SensitivitySpec
    from deploykit.runtimes import Runner
    from deploykit.state import Candidate
    from deploykit.train import LossFn, Objective

__all__ = ["Artifact", "DistillLoss", "Graph", "QuantGraph", "Task", "TaskModel",
           "replay_graphs"]


@dataclass(frozen=True)
class TaskModel:
    """A task's model as the pipeline starts from it: the module, the names of the layers the
    techniques keep whole and float by default (stem and head; ``""`` where a task has none)
    and the shape of one input image."""

    model: nn.Module
    first_last: tuple[str, str]
    input_shape: tuple[int, int, int]


def _same(model: nn.Module, module: nn.Module) -> nn.Module:
    return module


@dataclass(frozen=True)
class Graph:
    """A part of a task's model that the structural techniques (pruning) rewrite: a
    classifier is one graph (the whole model); a detector is its network (backbone, neck and
    heads) and, on a two-stage detector, the box head each proposal runs through.

    Attributes:
        module: the graph; it shares its layers with the model, so what is removed from it in
            place is removed from the model.
        input_shape: ``(C, H, W)`` of one input of the graph.
        keep_whole: layers whose output sizes what reads them fixes (a classifier's last
            layer, a detector's prediction convs): pruning leaves their outputs whole.
        prefix: the graph's prefix in the stage's metrics (``""`` for the whole model,
            ``"network_"``, ``"roi_"``).
        history_key: the checkpoint's ``arch`` key its pruning history is stored under.
        runs_per_input: how many times it runs per model input (a box head: once per
            proposal); its MACs count that many times.
        user_patterns: whether the recipe's ``ignored`` layer patterns name its layers.
        find_opaque: look for layers torch-pruning cannot follow (reshapes that mix channels,
            sealed blocks) and leave them whole; a task whose ``keep_whole`` already covers
            its reshapes turns it off.
        put_back: ``(model, pruned graph) -> model``: the model with the graph replaced by a
            pruned copy (the graph itself where pruning worked in place).
    """

    module: nn.Module
    input_shape: tuple[int, int, int]
    keep_whole: tuple[str, ...]
    prefix: str = ""
    history_key: str = "pruning_history"
    runs_per_input: int = 1
    user_patterns: bool = True
    find_opaque: bool = True
    put_back: Callable[[nn.Module, nn.Module], nn.Module] = _same


def replay_graphs(graphs: list[Graph], arch: dict[str, Any]) -> list[list[Any]]:
    """Replay the pruning histories a checkpoint's ``arch`` stores for each of ``graphs`` (in
    place, so on the model they share their layers with); return each graph's rounds."""
    history = []
    for graph in graphs:
        rounds = arch.get(graph.history_key, [])
        replay_pruning(graph.module, rounds, graph.input_shape)
        history.append(rounds)
    return history


@dataclass(frozen=True)
class QuantGraph:
    """What a task's float model gives the quantize stage: the graph that becomes the
    fake-quant model (a classifier whole; a detector's network, its resize, decoding and NMS
    staying float) and how the task's data and model meet it.

    Attributes:
        module: the float graph :func:`deploykit.quant.build_quantized` traces.
        keep_float: the recipe's ``keep_float`` patterns (``first``, ``last``, fnmatch) ->
            layer names in ``module``; raises ``ModelError`` for a pattern matching none.
        calibration: a loader (the recipe's calibration images) -> input batches of ``module``.
        sensitivity_batches: ``(loader, samples)`` -> ``(inputs, labels)`` batches of about
            ``samples`` images for the per-layer ranking; labels ``None`` where the task has
            none a layer's damage could be read from (then it is ranked by SQNR).
        wrap: the fake-quant graph -> the task's model computing through it (what is
            evaluated, fine-tuned, exported).
        reference: the float graph whose outputs the SQNR ranking compares with.
        compared: the fake-quant graph -> the module compared with ``reference``.
        default_sensitivity: the ranking settings when the recipe names none.
        qat_loss: the QAT settings -> the loss QAT fine-tunes with (``None``: the task's own
            training loss).
        speed_check: whether the quantize stage's speed check (INT8 placements timed
            against the float twin, judged on top-1) applies: a graph of one input batch in,
            logits out.
    """

    module: nn.Module
    keep_float: Callable[[Sequence[str]], list[str]]
    calibration: Callable[[Iterable], list[torch.Tensor]]
    sensitivity_batches: Callable[[Iterable, int], list[tuple[torch.Tensor, Any]]]
    wrap: Callable[[QuantizedModel], nn.Module]
    reference: nn.Module
    compared: Callable[[QuantizedModel], nn.Module]
    default_sensitivity: SensitivitySpec
    qat_loss: Callable[[QatSpec], LossFn | None]
    speed_check: bool = True


@dataclass(frozen=True)
class DistillLoss:
    """A distill stage's loss, as the task builds it from the recipe's terms.

    Attributes:
        loss: the training loss (``None``: the task's own, as plain fine-tuning).
        modules: trainable modules that live only during training (adapters, connectors):
            they share the optimizer and the checkpoint, and are dropped after.
        terms: the active terms, for the record and the progress line.
        notes: what the stage should say about how it built the loss.
        metrics: what the stage records about it (taps, adapter parameters).
    """

    loss: LossFn | None
    modules: nn.Module | None = None
    terms: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    metrics: dict[str, Any] | None = None


class Task(Protocol):
    """The hooks of a task (see the module notes).

    Attributes:
        name: the recipe's ``task:`` value it is registered under.
        primary_metric: the metric candidates are judged by (``top1_pct``, ``map50_pct``):
            a key of :meth:`evaluate`'s and :meth:`score`'s results, in percent.
        stage_kinds: the stage kinds it supports; a recipe naming another is refused at load.
        objective: its training loss, evaluator and tracked metric (``fit`` takes it).
    """

    name: str
    primary_metric: str
    stage_kinds: tuple[str, ...]

    @property
    def objective(self) -> Objective: ...

    def build_model(self, recipe: Recipe, checkpoint: str | Path | None = None,
                    model: nn.Module | None = None) -> TaskModel:
        """The recipe's model (or a copy of ``model``, the user's own), with ``checkpoint``
        (default ``model.checkpoint``) restored."""

    def check_model(self, built: TaskModel, recipe: Recipe, limit_gb: float | None) -> None:
        """Refuse, before any training, a model that cannot run this recipe."""

    def check_recipe(self, recipe: Recipe) -> list[str]:
        """What in ``recipe`` this task cannot run, each as ``"<key>: <why and the fix>"``
        (empty when it all fits): the recipe is validated with it as it loads. A plain
        function of the typed recipe (no model, no data)."""

    def graphs(self, model: nn.Module, input_shape: tuple[int, int, int],
               first_last: tuple[str, str]) -> list[Graph]:
        """The graphs of ``model`` the structural techniques rewrite, in the order they are
        rewritten (a later one may be built from the model the earlier ones changed)."""

    def quant_graph(self, model: nn.Module, input_shape: tuple[int, int, int],
                    first_last: tuple[str, str]) -> QuantGraph:
        """The graph of ``model`` (a float copy the stage owns and may adjust) that becomes
        INT8, with how the task's data and model meet it."""

    def distill_loss(self, student: nn.Module, teachers: list[nn.Module], spec: DistillSpec,
                     loaders: Any) -> DistillLoss:
        """The distill stage's loss for ``student`` taught by ``teachers`` (one model, or an
        ensemble where the task averages them)."""

    def loaders(self, recipe: Recipe) -> Any:
        """The recipe's data: ``train``, ``val``, ``calib`` loaders and ``input_shape``."""

    def evaluate(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        """Its metrics of the PyTorch ``model`` on ``loader``."""

    def score(self, runner: Runner, loader: Iterable) -> dict[str, float]:
        """Its metrics of an exported artifact run by ``runner`` on ``loader``."""

    def export(self, candidate: Candidate, loaders: Any, spec: ExportSpec, out_dir: Path,
               seed: int = 0) -> Artifact:
        """Export ``candidate`` under ``out_dir`` (atomically, checked by ``onnx.checker``)."""

    def parity(self, candidate: Candidate, artifact: Artifact, reference: Runner,
               runner: Runner, loaders: Any, spec: ExportSpec, seed: int = 0
               ) -> dict[str, Any]:
        """How closely ``runner`` (the artifact on a runtime) computes what ``reference``
        (PyTorch on the CPU) does; raises ``ParityError`` past ``spec.onnx.parity``'s limits.
        The figures keyed ``max_abs_error``, ``top1_agreement`` or ``matched_fraction`` are
        also kept per GPU runtime."""
