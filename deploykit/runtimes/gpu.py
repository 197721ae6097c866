"""PyTorch on a CUDA GPU, in the set-up a GPU user deploys: FP16/BF16, channels-last memory,
CUDA graphs (batch 1 on a big GPU is bound by kernel launches, which a graph replay removes)
and ``torch.compile``.

Every CUDA call goes through :func:`deploykit.runtimes.cuda.cuda_api`, so CI runs these paths
against a fake GPU; on a real one the API is ``torch.cuda``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from deploykit.errors import BackendUnavailableError
from deploykit.runtimes.base import INT8_ON_TORCH_CUDA, named_outputs
from deploykit.runtimes.cuda import cuda_api, require_cuda

if TYPE_CHECKING:
    from deploykit.recipe import RuntimeInfo
    from deploykit.runtimes.base import RunnerRequest

__all__ = ["TORCH_DTYPES", "TorchCudaRunner", "setup_name", "torch_cuda"]

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def setup_name(precision: str, channels_last: bool, cuda_graphs: bool, compile: bool) -> str:
    """How a torch-cuda latency row was run, e.g. ``fp16, channels_last, CUDA graphs``."""
    parts = [precision, "channels_last" if channels_last else "NCHW",
             "CUDA graphs" if cuda_graphs else "eager"]
    return ", ".join(parts + (["torch.compile"] if compile else []))


def torch_cuda(info: RuntimeInfo, req: RunnerRequest) -> TorchCudaRunner:
    """The ``torch-cuda`` row's factory, in the recipe's ``bench.gpu`` set-up.

    Raises:
        BackendUnavailableError: an INT8 candidate (:data:`INT8_ON_TORCH_CUDA`).
    """
    if req.precision not in ("fp32", "fp16", "bf16"):
        raise BackendUnavailableError(f"{req.precision} on torch-cuda: {INT8_ON_TORCH_CUDA}")
    gpu = req.gpu
    # the runner casts and moves its model: a copy, so the CPU runners keep theirs
    return TorchCudaRunner(copy.deepcopy(req.model), req.gpu_precision or gpu.precisions[0],
                           gpu.channels_last, gpu.cuda_graphs, gpu.compile, gpu.device)


@dataclass
class TorchCudaRunner:
    """PyTorch on GPU ``device_index``.

    ``precision``: fp32, fp16 or bf16 (weights and inputs cast). ``channels_last``: NHWC memory
    format. ``cuda_graphs``: capture one forward per input shape and replay it. ``compile``:
    ``torch.compile`` first. ``__call__`` is end to end (host -> device copy, compute, copy
    back); :meth:`device_ms` times device compute alone with CUDA events, input resident.
    """

    model: nn.Module
    precision: str = "fp32"
    channels_last: bool = False
    cuda_graphs: bool = False
    compile: bool = False
    device_index: int = 0
    runtime: str = "torch"
    device: str = "cuda"
    name: str = "torch-cuda"
    threads: int = 1
    _graphs: dict[tuple[int, ...], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        require_cuda("runtime torch-cuda", self.device_index)
        if self.precision not in TORCH_DTYPES:
            raise BackendUnavailableError(f"torch-cuda precision {self.precision!r}: choose "
                                          f"one of {', '.join(TORCH_DTYPES)}")
        self.api = cuda_api()
        self.dtype = TORCH_DTYPES[self.precision]
        self.torch_device = self.api.device(self.device_index)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.eval().to(self.torch_device, self.dtype, memory_format=fmt)
        self.weight_bytes = sum(t.numel() * t.element_size()
                                for t in [*self.model.parameters(), *self.model.buffers()])
        if self.compile:
            self.model = torch.compile(self.model)

    @property
    def setup(self) -> str:
        return setup_name(self.precision, self.channels_last, self.cuda_graphs, self.compile)

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.torch_device, self.dtype,
                                                         non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    @torch.inference_mode()
    def _forward(self, xd: torch.Tensor) -> torch.Tensor:
        if not self.cuda_graphs:
            return self.model(xd)
        key = tuple(xd.shape)
        if key not in self._graphs:   # one graph per input shape, captured on first use
            static_in = xd.clone(memory_format=torch.preserve_format)
            self._graphs[key] = (self.api.capture(self.model, static_in), static_in)
        (replay, _), static_in = self._graphs[key]
        static_in.copy_(xd)
        return replay()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self._forward(self._to_device(x))
        if not isinstance(out, torch.Tensor):   # several outputs: the first, from this forward
            first = next(iter(named_outputs(out).values()))
            self.api.synchronize(self.device_index)
            return first
        # a copy: with CUDA graphs the output is the graph's buffer, rewritten by each replay
        host = out.to("cpu", torch.float32, copy=True).numpy()
        self.api.synchronize(self.device_index)
        return host

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (``output_names`` of the module, as in its ONNX file)."""
        out = named_outputs(self._forward(self._to_device(x)),
                            getattr(self.model, "output_names", None))
        self.api.synchronize(self.device_index)
        return out

    def device_ms(self, x: np.ndarray, iterations: int = 50, warmup: int = 10) -> list[float]:
        """Device time per forward (ms), from CUDA events around each call, input resident."""
        xd = self._to_device(x)
        return self.api.time_ms(lambda: self._forward(xd), iterations, warmup)

    def peak_memory_mb(self, x: np.ndarray) -> float:
        """GPU memory this model needs at this batch (MB): its weights plus the peak of what
        one forward allocates beyond what was allocated before it (other models' weights on
        the same GPU are not counted)."""
        xd = self._to_device(x)
        self.api.synchronize(self.device_index)
        before = self.api.memory_allocated(self.device_index)
        self.api.reset_peak_memory(self.device_index)
        self._forward(xd)
        self.api.synchronize(self.device_index)
        extra = max(0, self.api.max_memory_allocated(self.device_index) - before)
        return (self.weight_bytes + extra + xd.numel() * xd.element_size()) / 1e6
