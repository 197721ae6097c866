"""Settings of each compression stage, registered by ``kind`` for the recipe loader.

Kept apart from the stage code so that loading a recipe never imports torch-pruning,
ONNX Runtime or any other heavy dependency.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from deploykit.spec_base import StageSpec, Strict, TrainSpec, register_stage_spec

__all__ = ["PruneSpec", "PruneTarget", "SparsitySpec"]

class PruneTarget(Strict):
    """Exactly one of: ``ratio`` (fraction of channels removed), ``macs_ratio`` (fraction of
    MACs kept) or ``latency_ratio`` (fraction of measured latency kept on ``runtime`` at
    ``batch_size``)."""

    ratio: float | None = Field(None, gt=0, lt=1)
    macs_ratio: float | None = Field(None, gt=0, lt=1)
    latency_ratio: float | None = Field(None, gt=0, lt=1)
    runtime: Literal["onnxruntime-cpu", "torch-cpu"] = "onnxruntime-cpu"
    batch_size: int = Field(1, ge=1)
    threads: int = Field(2, ge=1)
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

    epochs: int = Field(5, ge=1)
    reg: float = Field(1e-4, gt=0, alias="lambda")
    lr: float = Field(0.05, gt=0)


@register_stage_spec("prune")
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
