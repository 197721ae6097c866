"""What every runner is, and what building one takes: the ``Runner`` protocol and the request
each runtime's factory (named in :data:`deploykit.recipe.RUNTIME_TABLE`) receives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from deploykit.recipe import GpuBenchSpec

__all__ = ["INT8_ON_TORCH_CPU", "INT8_ON_TORCH_CUDA", "Runner", "RunnerRequest", "named_outputs"]

INT8_ON_TORCH_CPU = ("not applicable: PyTorch on the CPU runs an INT8 candidate as its fp32 "
                     "fake-quant simulation, which is not INT8 latency; the INT8 artifact is "
                     "timed on onnxruntime-cpu")
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

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The first output for batch ``x``."""

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (a detector's boxes, scores and labels)."""


def named_outputs(out: Any, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """A PyTorch module's outputs (a tensor, a tuple or list of them, or a dict) as host
    arrays by name: the dict's keys, else ``names`` (a module's ``output_names``), else
    ``output0``, ``output1``, ... Floating outputs come back as float32, others keep their
    type (a detector's int64 labels)."""
    import torch

    if isinstance(out, dict):
        items = list(out.items())
    else:
        outs = [out] if isinstance(out, torch.Tensor) else list(out)
        names = list(names or [f"output{i}" for i in range(len(outs))])
        if len(names) != len(outs):
            raise ValueError(f"{len(outs)} outputs but {len(names)} output names: {names}")
        items = list(zip(names, outs, strict=True))
    return {k: (v.detach().to("cpu", torch.float32) if v.is_floating_point()
                else v.detach().cpu()).numpy() for k, v in items}


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
