"""One Runner interface over every runtime: a callable from a float32 NCHW array to logits.

``torch-cpu`` runs the PyTorch module; ``onnxruntime-cpu`` runs the exported ONNX file in ONNX
Runtime's CPU execution provider. Thread counts are fixed per runner and recorded. The GPU
runtimes are built by :func:`make_runner` from :mod:`deploykit.runtimes.gpu`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from deploykit.errors import BackendUnavailableError
from deploykit.recipe import RUNTIMES

__all__ = ["OrtRunner", "Runner", "TorchRunner", "check_available", "make_runner"]


class Runner(Protocol):
    """Runs a batch; ``runtime``, ``device`` and ``precision`` name what a latency figure means."""

    runtime: str
    device: str
    precision: str
    threads: int

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

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if torch.get_num_threads() != self.threads:  # resizing the pool per call costs ms
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


class OrtRunner:
    """An ONNX Runtime session on ``providers`` (CPU by default) with fixed thread counts."""

    def __init__(self, path: str | Path, threads: int = 2, precision: str = "fp32",
                 provider: str = "CPUExecutionProvider") -> None:
        import onnxruntime as ort

        if provider not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"ONNX Runtime has no {provider} here (available: "
                f"{', '.join(ort.get_available_providers())}); for CUDA/TensorRT EPs run: "
                'pip install "deploykit[gpu]"')
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Worker threads still spin between the operators of one run (ONNX Runtime's default,
        # what a deployed session does), but stop when the run returns. By default they keep
        # spinning after it, and when several sessions are timed alternately in one process
        # (time_alternating) the idle sessions' spinning threads take the cores from the one
        # being timed: on the 2-core machine that made a mobilenet_v2 run 2-4x slower.
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=[provider])
        self.input_name = self.session.get_inputs()[0].name
        self.threads, self.precision = threads, precision
        self.runtime = "onnxruntime"
        self.device = "cpu" if provider == "CPUExecutionProvider" else "cuda"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output by name (the divergence search marks intermediate tensors)."""
        names = [o.name for o in self.session.get_outputs()]
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})
        return dict(zip(names, outs, strict=True))


_ORT_PROVIDERS = {"onnxruntime-cpu": "CPUExecutionProvider",
                  "onnxruntime-cuda": "CUDAExecutionProvider",
                  "onnxruntime-tensorrt": "TensorrtExecutionProvider"}


def make_runner(runtime: str, model: nn.Module | None = None, onnx_path: Path | None = None,
                threads: int = 2, precision: str = "fp32", max_batch: int = 64) -> Runner:
    """Build the runner named ``runtime`` (one of :data:`deploykit.recipe.RUNTIMES`).

    GPU runtimes (``torch-cuda``, ``onnxruntime-cuda``/``-tensorrt`` with onnxruntime-gpu,
    ``tensorrt`` with the TensorRT package) live in :mod:`deploykit.runtimes.gpu`.

    Raises:
        BackendUnavailableError: unknown runtime, a missing package or GPU (naming what to
            install), or the artifact it needs is missing.
    """
    if runtime == "torch-cuda":
        if model is None:
            raise BackendUnavailableError("runtime torch-cuda needs the PyTorch model")
        from deploykit.runtimes.gpu import TorchCudaRunner

        torch_precision = "fp16" if precision == "fp16" else "fp32"   # int8: its simulation
        return TorchCudaRunner(model, torch_precision)
    if runtime in ("onnxruntime-cuda", "onnxruntime-tensorrt"):
        if onnx_path is None:
            raise BackendUnavailableError(f"runtime {runtime} needs an exported ONNX file")
        return OrtRunner(onnx_path, threads, precision, provider=_ORT_PROVIDERS[runtime])
    if runtime == "tensorrt":
        if onnx_path is None:
            raise BackendUnavailableError("runtime tensorrt needs an exported ONNX file")
        from deploykit.runtimes.gpu import TensorRTRunner

        return TensorRTRunner(onnx_path, precision, max_batch)
    if runtime == "torch-cpu":
        if model is None:
            raise BackendUnavailableError("runtime torch-cpu needs the PyTorch model")
        return TorchRunner(model, threads, precision)
    if runtime == "onnxruntime-cpu":
        if onnx_path is None:
            raise BackendUnavailableError("runtime onnxruntime-cpu needs an exported ONNX file")
        return OrtRunner(onnx_path, threads, precision)
    raise BackendUnavailableError(f"unknown runtime {runtime!r}; available: {', '.join(RUNTIMES)}")


def check_available(runtime: str) -> None:
    """Raise now, before any training, if ``runtime`` cannot run on this machine.

    Raises:
        BackendUnavailableError: naming the runtime, what is missing and what to install or
            change (drop it from ``bench.runtimes``).
    """
    from deploykit.runtimes.gpu import _import_tensorrt, require_cuda

    where = f"bench.runtimes: {runtime}"
    if runtime in ("torch-cuda", "tensorrt"):
        require_cuda(where)
        if runtime == "tensorrt":
            _import_tensorrt()
    elif runtime in _ORT_PROVIDERS:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if _ORT_PROVIDERS[runtime] not in have:
            raise BackendUnavailableError(
                f"{where} needs ONNX Runtime's {_ORT_PROVIDERS[runtime]}, which this machine "
                f"does not have (available: {', '.join(have)}). Install onnxruntime-gpu on a "
                'CUDA machine (pip install "deploykit[gpu]") or remove it from bench.runtimes')
    elif runtime != "torch-cpu":
        raise BackendUnavailableError(f"unknown runtime {runtime!r}; available: "
                                      f"{', '.join(RUNTIMES)}")
