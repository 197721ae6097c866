"""Settings of the distill stage: the teacher, the weight of each loss term (classifier terms
and Chen et al.'s detection terms), and the stage itself."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from deploykit.recipe.base import MAX_IMAGE_SIZE, StageSpec, Strict, TrainSpec

__all__ = ["DETECTION_TERMS", "DistillSpec", "LossWeights", "TeacherSpec"]


class TeacherSpec(Strict):
    """Who teaches. ``checkpoints: []`` (default): the model as it was before the first
    compression stage. One or more deploykit checkpoints of ``model.name``: those (several make
    an ensemble whose softened probabilities are averaged). ``image_size``: the teacher's input
    resolution if it differs from the student's (the batch is resized for it). ``bn_train``:
    the teacher's BatchNorm uses batch statistics (Heo et al.; its running statistics are kept).
    """

    checkpoints: list[Path] = []
    image_size: int | None = Field(None, ge=8, le=MAX_IMAGE_SIZE)
    bn_train: bool = False


class LossWeights(Strict):
    """Weight of each loss term (0 disables it). ``ce``: cross-entropy on the labels; ``kd``:
    Hinton KD (T^2-scaled KL at ``temperature``); ``hint``: FitNets, 1/2 L2 through a 1x1 conv
    regressor at ``hint_tap``; ``attention``: attention transfer at every tap (the paper's
    beta/2 = 500 suits it); ``overhaul``: Heo et al. partial L2 on pre-ReLU features through 1x1
    conv + BN connectors (their CIFAR scale is 1e-3); ``fsp``: FSP matrices of consecutive taps."""

    ce: float = Field(0.1, ge=0)
    kd: float = Field(0.9, ge=0)
    hint: float = Field(0.0, ge=0)
    attention: float = Field(0.0, ge=0)
    overhaul: float = Field(0.0, ge=0)
    fsp: float = Field(0.0, ge=0)
    det_soft_ce: float = Field(0.0, ge=0, le=1, description="detectors (Chen et al.): share "
                               "1 - mu of the class-weighted soft cross-entropy in the "
                               "classification loss")
    det_bounded_reg: float = Field(0.0, ge=0, description="detectors: weight of the "
                                   "teacher-bounded regression loss")
    det_hint: float = Field(0.0, ge=0, description="detectors: weight of the hint loss "
                            "through a 1x1 adaptation layer")

    def feature_terms(self) -> list[str]:
        return [k for k in ("hint", "attention", "overhaul", "fsp") if getattr(self, k) > 0]

    def detection_terms(self) -> list[str]:
        return [k for k in DETECTION_TERMS if getattr(self, k) > 0]


DETECTION_TERMS = ("det_soft_ce", "det_bounded_reg", "det_hint")


def _function_matching_train() -> TrainSpec:
    return TrainSpec(epochs=5, optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine",
                     grad_clip=1.0)


class DistillSpec(StageSpec):
    """Recover the compressed model's accuracy with the original model as teacher.

    ``mode: standard``: the weighted ``losses`` on the loader's batches. ``mode:
    function_matching`` (Beyer et al. 2022): teacher and student see the same batch with strong
    mixup (``mixup``: lambda ~ U[0, 1]), the loss is the KL term alone, trained with AdamW,
    cosine LR without warm-up and global gradient clipping (``train`` defaults to that); the
    teacher runs online on every batch, never cached. ``taps``: module names (fnmatch patterns)
    for feature losses; default: the end of each stage. ``train``: the recovery schedule.
    """

    kind: Literal["distill"] = "distill"
    mode: Literal["standard", "function_matching"] = "standard"
    teacher: TeacherSpec = TeacherSpec()
    losses: LossWeights = LossWeights()
    temperature: float = Field(4.0, gt=0)
    taps: list[str] = []
    hint_tap: str | None = None
    mixup: bool = True
    train: TrainSpec = TrainSpec(epochs=5, lr=0.01, schedule="cosine")
    background_weight: float = Field(1.5, gt=0, description="detectors: det_soft_ce's weight "
                                     "of the background class (1 for the others)")
    margin: float = Field(0.0, ge=0, description="detectors: det_bounded_reg stops pushing a "
                          "box once the student beats the teacher by this much")
    hint_level: int = Field(0, ge=0, description="detectors: which backbone feature map "
                            "carries det_hint (0: the first the head reads)")

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("mode") == "function_matching":
            data = dict(data)
            if "train" not in data:
                data["train"] = _function_matching_train()
            if "losses" not in data:
                data["losses"] = {"ce": 0.0, "kd": 1.0}
            data.setdefault("temperature", 1.0)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DistillSpec:
        w = self.losses
        if self.mode == "function_matching" and (w.ce or w.feature_terms() or not w.kd):
            raise ValueError("function_matching trains on the KL term alone: set losses to "
                             "{ce: 0, kd: 1} (or leave losses out)")
        if not (w.ce or w.kd or w.feature_terms()):
            raise ValueError("every loss weight is 0; give at least one of ce, kd, hint, "
                             "attention, overhaul, fsp a positive weight")
        if w.feature_terms() and len(self.teacher.checkpoints) > 1:
            raise ValueError(f"feature losses ({', '.join(w.feature_terms())}) need a single "
                             "teacher; an ensemble can only teach through kd")
        return self
