"""Building runners by runtime name: :func:`make_runner` looks the name up in the runtime table
(:data:`deploykit.recipe.RUNTIME_TABLE`) and calls the factory its row names; and the runner of
``torch-cpu``, PyTorch eager on the CPU with a fixed thread count.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from deploykit.errors import BackendUnavailableError
from deploykit.recipe import RuntimeInfo, runtime_info
from deploykit.runtimes.base import Runner, RunnerRequest, named_outputs

if TYPE_CHECKING:
    from deploykit.recipe import GpuBenchSpec

__all__ = ["TorchRunner", "make_runner", "make_runners", "torch_cpu"]


@dataclass
class TorchRunner:
    """PyTorch eager on the CPU with ``threads`` intra-op threads. A module returning several
    outputs names them with an ``output_names`` attribute (as its ONNX file does)."""

    model: nn.Module
    threads: int = 2
    precision: str = "fp32"
    runtime: str = "torch"
    device: str = "cpu"
    name: str = "torch-cpu"

    def __post_init__(self) -> None:
        self.model = self.model.eval()
        self.setup = f"eager, {self.threads} threads"

    def _forward(self, x: np.ndarray) -> object:
        if torch.get_num_threads() != self.threads:  # resizing the pool per call costs ms
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(x)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self._forward(x)
        if isinstance(out, torch.Tensor):
            return out.numpy()
        return next(iter(named_outputs(out).values()))

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return named_outputs(self._forward(x), getattr(self.model, "output_names", None))


def torch_cpu(info: RuntimeInfo, req: RunnerRequest) -> TorchRunner:
    """The ``torch-cpu`` row's factory."""
    return TorchRunner(req.model, req.threads, req.precision)


def make_runner(runtime: str, model: nn.Module | None = None, onnx_path: Path | None = None,
                threads: int = 2, precision: str = "fp32", max_batch: int = 64,
                gpu: GpuBenchSpec | None = None, gpu_precision: str | None = None) -> Runner:
    """Build the runner named ``runtime`` (a name of :data:`deploykit.recipe.RUNTIMES`).

    ``gpu``: the recipe's ``bench.gpu`` set-up (device index, channels_last, CUDA graphs,
    compile; defaults when None); ``gpu_precision``: the torch-cuda precision to run a float
    candidate in (default: the first of ``gpu.precisions``).

    Raises:
        BackendUnavailableError: unknown runtime, a missing package or GPU (naming what to
            install), the artifact it needs is missing, or an INT8 candidate on torch-cuda
            (which would time its simulation).
    """
    if gpu is None:
        from deploykit.recipe import GpuBenchSpec

        gpu = GpuBenchSpec()
    try:
        info = runtime_info(runtime)
    except KeyError as e:
        raise BackendUnavailableError(str(e.args[0])) from None
    if (model if info.runs == "module" else onnx_path) is None:
        raise BackendUnavailableError(
            f"runtime {runtime} needs " + ("the PyTorch model" if info.runs == "module"
                                           else "an exported ONNX file"))
    module, _, function = info.runner.partition(":")
    factory = getattr(importlib.import_module(module), function)
    return factory(info, RunnerRequest(model, onnx_path, threads, precision, max_batch, gpu,
                                       gpu_precision))


def make_runners(runtime: str, model: nn.Module, onnx_path: Path, threads: int, precision: str,
                 max_batch: int, gpu: GpuBenchSpec) -> list[Runner]:
    """The runners that time one candidate on ``runtime``: one per ``gpu.precisions`` entry on
    torch-cuda (a float candidate; each gets its own latency row), none for an INT8 candidate
    there (:data:`INT8_ON_TORCH_CUDA`), else the one runner of :func:`make_runner`."""
    if runtime != "torch-cuda":
        return [make_runner(runtime, model, onnx_path, threads, precision, max_batch, gpu)]
    if precision == "int8":
        return []
    return [make_runner(runtime, model, onnx_path, threads, precision,
                        max_batch, gpu, p) for p in gpu.precisions]
