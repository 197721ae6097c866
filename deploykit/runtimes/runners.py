"""One Runner interface over every runtime: a callable from a float32 NCHW array to logits.

``torch-cpu`` runs the PyTorch module; ``onnxruntime-cpu`` runs the exported ONNX file in ONNX
Runtime's CPU execution provider. Thread counts are fixed per runner and recorded. The GPU
runtimes (:mod:`~deploykit.runtimes.gpu`, :mod:`~deploykit.runtimes.ort`,
:mod:`~deploykit.runtimes.tensorrt`) are built by :func:`make_runner` too, in the set-up of the
recipe's ``bench.gpu`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

from deploykit.errors import BackendUnavailableError
from deploykit.recipe import RUNTIMES
from deploykit.runtimes.ort import ORT_PROVIDERS, OrtRunner

if TYPE_CHECKING:
    from deploykit.recipe import GpuBenchSpec

__all__ = ["INT8_ON_TORCH_CUDA", "Runner", "TorchRunner", "make_runner", "make_runners"]

INT8_ON_TORCH_CUDA = ("not applicable: PyTorch on CUDA has no INT8 engine (it would run the "
                      "fp32 fake-quant simulation); time INT8 on tensorrt or "
                      "onnxruntime-tensorrt")


class Runner(Protocol):
    """Runs a batch; ``runtime``, ``device``, ``precision`` and ``setup`` (how it runs, e.g.
    ``CPU EP, 2 threads``) name what a latency figure means."""

    runtime: str
    device: str
    precision: str
    threads: int
    setup: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class TorchRunner:
    """PyTorch eager on the CPU with ``threads`` intra-op threads."""

    model: nn.Module
    threads: int = 2
    precision: str = "fp32"
    runtime: str = "torch"
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.model = self.model.eval()
        self.setup = f"eager, {self.threads} threads"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if torch.get_num_threads() != self.threads:  # resizing the pool per call costs ms
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def make_runner(runtime: str, model: nn.Module | None = None, onnx_path: Path | None = None,
                threads: int = 2, precision: str = "fp32", max_batch: int = 64,
                gpu: GpuBenchSpec | None = None, gpu_precision: str | None = None) -> Runner:
    """Build the runner named ``runtime`` (one of :data:`deploykit.recipe.RUNTIMES`).

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
    if runtime == "torch-cuda":
        if model is None:
            raise BackendUnavailableError("runtime torch-cuda needs the PyTorch model")
        if precision not in ("fp32", "fp16", "bf16"):
            raise BackendUnavailableError(f"{precision} on torch-cuda: {INT8_ON_TORCH_CUDA}")
        import copy

        from deploykit.runtimes.gpu import TorchCudaRunner

        # the runner casts and moves its model: a copy, so the CPU runners keep theirs
        return TorchCudaRunner(copy.deepcopy(model), gpu_precision or gpu.precisions[0],
                               gpu.channels_last, gpu.cuda_graphs, gpu.compile, gpu.device)
    if runtime in ("onnxruntime-cuda", "onnxruntime-tensorrt"):
        if onnx_path is None:
            raise BackendUnavailableError(f"runtime {runtime} needs an exported ONNX file")
        return OrtRunner(onnx_path, threads, precision, provider=ORT_PROVIDERS[runtime],
                         device_index=gpu.device, fp16="fp16" in gpu.precisions)
    if runtime == "tensorrt":
        if onnx_path is None:
            raise BackendUnavailableError("runtime tensorrt needs an exported ONNX file")
        from deploykit.runtimes.tensorrt import TensorRTRunner

        return TensorRTRunner(onnx_path, precision, max_batch, device_index=gpu.device)
    if runtime == "torch-cpu":
        if model is None:
            raise BackendUnavailableError("runtime torch-cpu needs the PyTorch model")
        return TorchRunner(model, threads, precision)
    if runtime == "onnxruntime-cpu":
        if onnx_path is None:
            raise BackendUnavailableError("runtime onnxruntime-cpu needs an exported ONNX file")
        return OrtRunner(onnx_path, threads, precision)
    raise BackendUnavailableError(f"unknown runtime {runtime!r}; available: {', '.join(RUNTIMES)}")


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
