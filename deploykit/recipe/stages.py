"""Settings of each compression stage, and :data:`STAGE_KINDS`: the one registry of stage kinds.

Kept apart from the stage code so that loading a recipe never imports torch-pruning,
ONNX Runtime or any other heavy dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, model_validator

from deploykit.recipe.base import (
    MAX_BATCH,
    MAX_THREADS,
    StageSpec,
    Strict,
    TrainSpec,
)
from deploykit.recipe.distill import DETECTION_TERMS, DistillSpec, LossWeights, TeacherSpec

__all__ = [
    "DETECTION_TERMS",
    "STAGE_KINDS",
    "CalibrationSpec",
    "DistillSpec",
    "LossWeights",
    "LowRankSpec",
    "PruneSpec",
    "PruneTarget",
    "QatSpec",
    "QuantizeSpec",
    "RankSpec",
    "SensitivitySpec",
    "SparsitySpec",
    "SpeedCheckSpec",
    "StageKind",
    "TeacherSpec",
    "candidate_names",
    "stage_candidates",
]


class PruneTarget(Strict):
    """Exactly one of: ``ratio`` (fraction of channels removed), ``macs_ratio`` (fraction of
    MACs kept) or ``latency_ratio`` (fraction of measured latency kept on ``runtime`` at
    ``batch_size``)."""

    ratio: float | None = Field(None, gt=0, lt=1)
    macs_ratio: float | None = Field(None, gt=0, lt=1)
    latency_ratio: float | None = Field(None, gt=0, lt=1)
    runtime: Literal["onnxruntime-cpu", "torch-cpu"] = "onnxruntime-cpu"
    batch_size: int = Field(1, ge=1, le=MAX_BATCH)
    threads: int = Field(2, ge=1, le=MAX_THREADS)
    tolerance: float = Field(0.02, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _exactly_one(self) -> PruneTarget:
        keys = ("ratio", "macs_ratio", "latency_ratio")
        given = [k for k in keys if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of ratio, macs_ratio, latency_ratio "
                             f"(got {', '.join(given) or 'none'})")
        return self


class SparsitySpec(Strict):
    """Sparsity-regularised training before pruning: L1 on BatchNorm scales (``bn_scale``,
    Network Slimming) or group lasso (``group_norm``), with strength ``lambda``."""

    epochs: int = Field(5, ge=1, le=100_000)
    reg: float = Field(1e-4, gt=0, alias="lambda")
    lr: float = Field(0.05, gt=0, le=10)


class PruneSpec(StageSpec):
    """Structured channel pruning with torch-pruning (DepGraph).

    ``global``: rank channels across layers instead of per layer. ``round_to``: keep widths
    multiples of this (8 suits tensor cores and INT8 kernels). ``ignored``: module-name
    patterns (fnmatch) left whole; the classifier always is. ``steps``: prune -> fine-tune
    rounds. ``finetune``: training after each round (null: none; a distill stage may follow).
    """

    kind: Literal["prune"] = "prune"
    importance: Literal["l1", "l2", "bn_scale", "taylor", "group_norm", "random"] = "l1"
    target: PruneTarget
    global_ranking: bool = Field(False, alias="global")
    round_to: int | None = Field(8, ge=1)
    ignored: list[str] = []
    max_layer_ratio: float = Field(0.9, gt=0, lt=1)
    steps: int = Field(1, ge=1)
    sparsity: SparsitySpec | None = None
    finetune: TrainSpec | None = None
    taylor_batches: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _sparsity_needs_a_regularising_criterion(self) -> PruneSpec:
        if self.sparsity is not None and self.importance not in ("bn_scale", "group_norm"):
            raise ValueError("sparsity training regularises BatchNorm scales (importance: "
                             "bn_scale) or channel groups (importance: group_norm); "
                             f"importance {self.importance!r} has no regulariser")
        return self


class CalibrationSpec(Strict):
    """How activation ranges are found on the calibration set (``data.calib_samples`` images).

    ``minmax``: observed extremes. ``percentile``: clip at the ``percentile`` of the histogram.
    ``entropy``: minimise the KL divergence between the float and quantized histograms
    (TensorRT's method). ``mse``: minimise the quantization error (L2) over the histogram.
    All keep a fixed-size histogram or running extremes, so memory does not grow with the set.
    """

    method: Literal["minmax", "percentile", "entropy", "mse"] = "percentile"
    percentile: float = Field(99.99, gt=50, le=100)
    bins: int = Field(2048, ge=128)


class QatSpec(TrainSpec):
    """Quantization-aware fine-tuning: the shared training loop on the fake-quant model, with
    the float model as a knowledge-distillation teacher (``kd_alpha`` weight on the KD term)."""

    epochs: int = Field(2, ge=1, le=100_000)
    lr: float = Field(1e-4, gt=0, le=10)
    schedule: Literal["onecycle", "cosine", "constant"] = "cosine"
    kd_alpha: float = Field(0.5, ge=0, le=1)
    kd_temperature: float = Field(4.0, gt=0)
    freeze_bn_after: int = Field(1, ge=0, description="epochs of BatchNorm updates")
    freeze_observers_after: int = Field(1, ge=0, description="epochs of range updates")


class SensitivitySpec(Strict):
    """Per-layer analysis: quantize one layer at a time (``only``) or everything but one
    (``all_but``); rank by top-1 drop on ``samples`` validation images, or by output SQNR."""

    method: Literal["only", "all_but"] = "all_but"
    metric: Literal["accuracy", "sqnr"] = "accuracy"
    samples: int = Field(1000, ge=16)


class SpeedCheckSpec(Strict):
    """Does INT8 pay? After quantizing for ``onnxruntime-cpu`` (or ``openvino``), the INT8
    artifact is timed against its float twin on that runtime (ONNX Runtime's CPU EP, or
    ``openvino-cpu``; alternately, at ``batch_sizes``). When it
    is slower at any of them, the other placements are tried (every layer INT8; max-pools in
    INT8) and the fastest whose fake-quant top-1 is within ``max_accuracy_drop`` points of the
    float model is kept; when none is faster than the float twin, the stage records that INT8
    does not pay on this machine and the report recommends the float candidate."""

    batch_sizes: list[Annotated[int, Field(ge=1, le=MAX_BATCH)]] = Field([1, 64], min_length=1)
    threads: int = Field(2, ge=1, le=MAX_THREADS)
    iterations: int = Field(30, ge=5)
    max_accuracy_drop: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _positive(self) -> SpeedCheckSpec:
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError("speed_check.batch_sizes must be positive integers")
        return self


class QuantizeSpec(StageSpec):
    """INT8 quantization to an ONNX model with explicit QuantizeLinear/DequantizeLinear.

    ``target`` fixes the scheme for both modes: ``onnxruntime-cpu`` = uint8 asymmetric
    activations, int8 symmetric per-channel weights, max-pools float; ``openvino`` = the same
    with max-pools INT8, and the speed check timed in OpenVINO (``openvino-cpu``); ``tensorrt``
    = int8 symmetric activations (zero point 0) and weights. ``keep_float``: ``first``,
    ``last``, ``depthwise`` (every depthwise conv) and module-name patterns (fnmatch) left in
    float (on a detector ``last`` is
    every prediction conv of the heads).
    ``max_accuracy_drop`` (classifiers) / ``max_map_drop`` (detectors): keep the most
    sensitive layers in float until the INT8 model is within this many top-1 / mAP@.5 points
    of the float one. ``fp16``: also produce an FP16 candidate (float32 inputs/outputs) for
    GPU targets (classifiers).
    """

    kind: Literal["quantize"] = "quantize"
    mode: Literal["ptq", "qat"] = "ptq"
    target: Literal["onnxruntime-cpu", "openvino", "tensorrt"] = "onnxruntime-cpu"
    calibration: CalibrationSpec = CalibrationSpec()
    keep_float: list[str] = ["first", "last"]
    sensitivity: SensitivitySpec | None = None
    max_accuracy_drop: float | None = Field(None, gt=0)
    max_map_drop: float | None = Field(None, gt=0)
    max_float_layers: int = Field(8, ge=0, description="fallback stops after this many")
    keep_sensitive: int = Field(0, ge=0, description="also keep this many of the most "
                                "sensitive layers float (by the sensitivity ranking)")
    qat: QatSpec = QatSpec()
    fp16: bool = False
    speed_check: SpeedCheckSpec | None = SpeedCheckSpec()

    @property
    def speed_runtime(self) -> str | None:
        """The runtime the speed check times INT8 on for this target (``None``: a target
        that cannot be timed here, TensorRT)."""
        return {"onnxruntime-cpu": "onnxruntime-cpu", "openvino": "openvino-cpu"}.get(
            self.target)

    @property
    def max_drop(self) -> float | None:
        """The fallback bound, in points of the task's primary metric: ``max_accuracy_drop``
        or a detector's ``max_map_drop``, whichever is set."""
        return self.max_map_drop if self.max_accuracy_drop is None else self.max_accuracy_drop


class RankSpec(Strict):
    """Exactly one of: ``energy`` (per layer, the smallest rank keeping this fraction of the
    squared singular values), ``macs_ratio`` (one energy level for all layers, chosen so the
    model keeps this fraction of its MACs), or ``rank`` (an integer, or a fraction of each
    layer's full rank)."""

    energy: float | None = Field(None, gt=0, le=1)
    macs_ratio: float | None = Field(None, gt=0, lt=1)
    rank: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> RankSpec:
        given = [k for k in ("energy", "macs_ratio", "rank") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of energy, macs_ratio, rank "
                             f"(got {', '.join(given) or 'none'})")
        if self.rank is not None and self.rank >= 1 and self.rank != int(self.rank):
            raise ValueError(f"rank {self.rank}: an integer >= 1, or a fraction in (0, 1)")
        return self


class LowRankSpec(StageSpec):
    """Low-rank factorisation of convolutions and linear layers (tensorly for Tucker-2).

    ``method``: ``svd`` (a kh x kw conv with r filters then a 1x1 conv; a linear becomes two)
    or ``tucker2`` (1x1, kh x kw, 1x1 convs on the channel modes; linears get SVD). ``layers``:
    module-name patterns (fnmatch) to factorise; ``keep``: ``first``, ``last`` and patterns
    left whole. Layers whose factorisation would not cut MACs, and grouped convolutions, are
    left alone and reported. ``finetune``: training right after (null: a distill stage follows).
    """

    kind: Literal["lowrank"] = "lowrank"
    method: Literal["svd", "tucker2"] = "tucker2"
    target: RankSpec = RankSpec(energy=0.9)
    layers: list[str] = ["*"]
    keep: list[str] = ["first", "last"]
    finetune: TrainSpec | None = None


@dataclass(frozen=True)
class StageKind:
    """A stage kind: its settings model and where it may stand in ``stages``.

    The stage's code is the module ``deploykit.stages.<kind>``. ``after``: the kind must come
    after at least one of these; ``last``: it must be the last stage; ``why`` says why.
    """

    spec: type[StageSpec]
    after: tuple[str, ...] = ()
    last: bool = False
    why: str = ""


STAGE_KINDS: dict[str, StageKind] = {
    "prune": StageKind(PruneSpec),
    "lowrank": StageKind(LowRankSpec),
    "distill": StageKind(DistillSpec, after=("prune", "lowrank"),
                         why="distillation recovers accuracy lost by a compression stage"),
    "quantize": StageKind(QuantizeSpec, last=True,
                          why="quantize produces the INT8 artifact; no float stage can follow it"),
}


def stage_candidates(spec: StageSpec, previous: str) -> list[str]:
    """Names of the candidates a stage adds after the candidate named ``previous``: the one
    place that names them (stages use it, and the recipe's ``gates.candidate`` is checked
    against it when the recipe loads)."""
    if isinstance(spec, DistillSpec):
        return ["distill" if previous == "baseline" else f"{previous}+distill"]
    if isinstance(spec, QuantizeSpec):
        return [*(["fp16"] if spec.fp16 else []), f"{spec.mode}-int8"]
    return [spec.kind]


def candidate_names(stages: list[StageSpec]) -> list[str]:
    """Every candidate a recipe's stages produce, in order, starting with ``baseline``."""
    names = ["baseline"]
    for spec in stages:
        names += stage_candidates(spec, names[-1])
    return names
