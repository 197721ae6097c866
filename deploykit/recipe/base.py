"""Base classes of the recipe schema, shared by the recipe and the stage settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MAX_BATCH", "MAX_IMAGE_SIZE", "MAX_THREADS", "StageSpec", "Strict", "TrainSpec"]

# Bounds far beyond any real run, so that a typo (an image size of 100000000) is a recipe error
# naming the key instead of an allocation failure after the training.
MAX_IMAGE_SIZE = 4096
MAX_BATCH = 65_536
MAX_THREADS = 1024


class Strict(BaseModel):
    """A recipe section: unknown keys are errors, values are immutable once loaded, and no
    number is infinite or NaN (YAML reads ``1e999`` as infinity)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              allow_inf_nan=False)


class TrainSpec(Strict):
    """The shared training loop's settings (baseline training and every fine-tune)."""

    epochs: int = Field(15, ge=0, le=100_000)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.2, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0, le=1)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    aux_weight: float = Field(0.0, ge=0, description="weight of auxiliary-head losses "
                              "(googlenet 0.3, inception_v3 0.4 in torchvision's references)")
    grad_clip: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bfloat16 autocast when training on CUDA")


class StageSpec(Strict):
    """Base of every stage's settings; ``kind`` selects the stage."""

    kind: str
