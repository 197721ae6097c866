"""One Runner interface over every runtime: a callable from a float32 NCHW array to logits.

``torch-cpu`` runs the PyTorch module; ``onnxruntime-cpu`` runs the exported ONNX file in ONNX
Runtime's CPU execution provider. Thread counts are fixed per runner and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from deploykit.errors import BackendUnavailableError

__all__ = ["RUNTIMES", "OrtRunner", "Runner", "TorchRunner", "make_runner"]


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
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=[provider])
        self.input_name = self.session.get_inputs()[0].name
        self.threads, self.precision = threads, precision
        self.runtime = "onnxruntime"
        self.device = "cpu" if provider == "CPUExecutionProvider" else "cuda"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]


RUNTIMES = ("torch-cpu", "onnxruntime-cpu")


def make_runner(runtime: str, model: nn.Module | None = None, onnx_path: Path | None = None,
                threads: int = 2, precision: str = "fp32") -> Runner:
    """Build the runner named ``runtime`` (one of :data:`RUNTIMES`).

    Raises:
        BackendUnavailableError: unknown runtime, or the artifact it needs is missing.
    """
    if runtime == "torch-cpu":
        if model is None:
            raise BackendUnavailableError("runtime torch-cpu needs the PyTorch model")
        return TorchRunner(model, threads, precision)
    if runtime == "onnxruntime-cpu":
        if onnx_path is None:
            raise BackendUnavailableError("runtime onnxruntime-cpu needs an exported ONNX file")
        return OrtRunner(onnx_path, threads, precision)
    raise BackendUnavailableError(f"unknown runtime {runtime!r}; available: {', '.join(RUNTIMES)}")
