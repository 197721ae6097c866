"""What every runner is, and what building one takes: the ``Runner`` protocol and the request
each runtime's factory (named in :data:`deploykit.recipe.RUNTIME_TABLE`) receives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from deploykit.recipe import GpuBenchSpec

__all__ = ["INT8_ON_TORCH_CUDA", "Runner", "RunnerRequest"]

INT8_ON_TORCH_CUDA = ("not applicable: PyTorch on CUDA has no INT8 engine (it would run the "
                      "fp32 fake-quant simulation); time INT8 on tensorrt or "
                      "onnxruntime-tensorrt")


class Runner(Protocol):
    """Runs a batch. ``name`` is the runtime's name in the runtime table (what latency rows,
    gates and ``tune`` are keyed by); ``runtime`` the engine (``torch``, ``onnxruntime``,
    ``tensorrt``); ``device``, ``precision`` and ``setup`` (how it runs, e.g. ``CPU EP, 2
    threads``) say what a latency figure means."""

    name: str
    runtime: str
    device: str
    precision: str
    threads: int
    setup: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RunnerRequest:
    """What a runtime's factory gets: the candidate (its module and its exported file: each
    runtime takes the one it runs), threads, precision, the largest batch (TensorRT's shape
    profile), the recipe's ``bench.gpu`` set-up and, on torch-cuda, the precision to run in."""

    model: nn.Module | None
    onnx_path: Path | None
    threads: int
    precision: str
    max_batch: int
    gpu: GpuBenchSpec
    gpu_precision: str | None = None
