"""What passes from stage to stage: the current model, the candidates so far, and the history."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn


@dataclass
class StageRecord:
    """A stage's footprint in the report: what it was asked, what it measured, its seconds."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    seconds: float
    peak_rss_gb: float | None = None   # the process's peak resident memory during the stage


@dataclass
class Candidate:
    """A model worth measuring: the baseline, or the result of a stage.

    ``model`` is the PyTorch module to export; ``precision`` names how the artifact computes
    (``fp32`` now, ``int8`` after quantization); ``keep_float`` lists layers left in float;
    ``torch_top1_pct`` is the task's primary metric of the PyTorch model where a stage
    measured it (top-1 for a classifier).
    """

    name: str
    model: nn.Module
    precision: str = "fp32"
    onnx_path: Path | None = None
    torch_top1_pct: float | None = None
    keep_float: list[str] = field(default_factory=list)
    arch: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineState:
    """The state a stage receives and returns.

    Attributes:
        model: the model the next stage works on (the latest candidate's model).
        baseline: a frozen copy of the uncompressed model (default distillation teacher).
        first_last: names of the stem and classifier layers, found once on the baseline.
        input_shape: ``(C, H, W)`` of one input image.
        output_dir: the run folder, for stage checkpoints.
        resume: whether stages should continue from their checkpoints.
        recipe: the recipe (the distill stage builds teachers from checkpoints with it).
        task: the recipe's task (:class:`deploykit.tasks.Task`): what the stage drivers ask
            for the loss, the evaluation and the metric.
    """

    model: nn.Module
    baseline: nn.Module
    first_last: tuple[str, str]
    input_shape: tuple[int, int, int]
    output_dir: Path
    resume: bool = False
    recipe: Any = None
    task: Any = None
    candidates: list[Candidate] = field(default_factory=list)
    history: list[StageRecord] = field(default_factory=list)

    def add_candidate(self, candidate: Candidate) -> None:
        """Record ``candidate`` and make its model the one the next stage works on."""
        self.candidates.append(candidate)
        self.model = candidate.model

    @classmethod
    def start(
        cls,
        model: nn.Module,
        first_last: tuple[str, str],
        input_shape: tuple[int, int, int],
        output_dir: Path,
        resume: bool = False,
        torch_top1_pct: float | None = None,
    ) -> PipelineState:
        """Begin a pipeline with ``model`` as the float baseline candidate."""
        baseline = copy.deepcopy(model).eval()
        for p in baseline.parameters():
            p.requires_grad_(False)
        state = cls(model, baseline, first_last, input_shape, output_dir, resume)
        state.add_candidate(Candidate("baseline", model, torch_top1_pct=torch_top1_pct))
        return state
