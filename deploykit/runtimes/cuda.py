"""Every CUDA call the GPU runners make, behind one seam (:class:`CudaApi`).

The runners never call ``torch.cuda`` directly: they ask :func:`cuda_api` for the API in use,
which is :class:`TorchCudaApi` (``torch.cuda`` itself) unless a test has installed another with
:func:`use_cuda_api`. CI has no GPU; its tests install a fake that keeps tensors on the CPU and
reads a synthetic clock, so the runners' precision, memory-format, CUDA-graph, timing and
memory paths run there. The real API is exercised only on a GPU machine.

Also here: what a GPU can do (:func:`peak_fp16_tflops`, from a table of published dense FP16
tensor-core peaks, or measured once with a large matmul) and the CUDA-event timing loop shared
by the PyTorch and TensorRT runners.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from deploykit.errors import BackendUnavailableError

__all__ = ["CudaApi", "TorchCudaApi", "cuda_api", "cuda_event_ms", "peak_fp16_tflops",
           "require_cuda", "use_cuda_api"]

Replay = Callable[[], torch.Tensor]


class CudaApi:
    """What a GPU runner needs from CUDA. :class:`TorchCudaApi` is the implementation;
    a test's fake overrides the same methods."""

    def is_available(self) -> bool:
        raise NotImplementedError

    def device_count(self) -> int:
        raise NotImplementedError

    def device_name(self, index: int) -> str:
        raise NotImplementedError

    def device(self, index: int) -> torch.device:
        """Where tensors for GPU ``index`` live."""
        raise NotImplementedError

    def capture(self, fn: Callable[[torch.Tensor], torch.Tensor],
                static_in: torch.Tensor) -> tuple[Replay, torch.Tensor]:
        """Record ``fn(static_in)`` once as a CUDA graph: returns ``(replay, static_out)``;
        ``replay()`` re-runs it on whatever ``static_in`` holds and refreshes ``static_out``."""
        raise NotImplementedError

    def time_ms(self, step: Callable[[], object], iterations: int, warmup: int,
                stream: Any = None) -> list[float]:
        """Device milliseconds of each of ``iterations`` calls after ``warmup`` untimed ones,
        events recorded on ``stream`` (the current stream when None)."""
        raise NotImplementedError

    def new_stream(self, index: int) -> Any:
        raise NotImplementedError

    def stream_handle(self, stream: Any) -> int:
        """The raw ``cudaStream_t`` of ``stream``, for libraries that launch on it."""
        raise NotImplementedError

    def synchronize_stream(self, stream: Any) -> None:
        raise NotImplementedError

    def synchronize(self, index: int) -> None:
        raise NotImplementedError

    def memory_allocated(self, index: int) -> int:
        raise NotImplementedError

    def reset_peak_memory(self, index: int) -> None:
        raise NotImplementedError

    def max_memory_allocated(self, index: int) -> int:
        raise NotImplementedError


class TorchCudaApi(CudaApi):
    """``torch.cuda``, as documented (CUDA graphs: warm-up on a side stream, then capture)."""

    def is_available(self) -> bool:
        return torch.cuda.is_available()

    def device_count(self) -> int:
        return torch.cuda.device_count()

    def device_name(self, index: int) -> str:
        return torch.cuda.get_device_name(index)

    def device(self, index: int) -> torch.device:
        return torch.device("cuda", index)

    def capture(self, fn: Callable[[torch.Tensor], torch.Tensor],
                static_in: torch.Tensor) -> tuple[Replay, torch.Tensor]:
        stream = torch.cuda.Stream(static_in.device)
        stream.wait_stream(torch.cuda.current_stream(static_in.device))
        with torch.cuda.stream(stream):
            for _ in range(3):   # kernels are selected and workspaces allocated before capture
                fn(static_in)
        torch.cuda.current_stream(static_in.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = fn(static_in)

        def replay() -> torch.Tensor:
            graph.replay()
            return static_out

        return replay, static_out

    def time_ms(self, step: Callable[[], object], iterations: int, warmup: int,
                stream: Any = None) -> list[float]:
        return cuda_event_ms(step, iterations, warmup, stream)

    def new_stream(self, index: int) -> Any:
        return torch.cuda.Stream(index)

    def stream_handle(self, stream: Any) -> int:
        return int(stream.cuda_stream)

    def synchronize_stream(self, stream: Any) -> None:
        stream.synchronize()

    def synchronize(self, index: int) -> None:
        torch.cuda.synchronize(index)

    def memory_allocated(self, index: int) -> int:
        return torch.cuda.memory_allocated(index)

    def reset_peak_memory(self, index: int) -> None:
        torch.cuda.reset_peak_memory_stats(index)

    def max_memory_allocated(self, index: int) -> int:
        return torch.cuda.max_memory_allocated(index)


_installed: list[CudaApi] = []


def cuda_api() -> CudaApi:
    """The CUDA API the runners use now: ``torch.cuda`` unless a test installed another."""
    return _installed[-1] if _installed else TorchCudaApi()


@contextlib.contextmanager
def use_cuda_api(api: CudaApi) -> Iterator[CudaApi]:
    """Make the runners use ``api`` inside the ``with`` block (tests: a fake GPU)."""
    _installed.append(api)
    try:
        yield api
    finally:
        _installed.remove(api)


def require_cuda(what: str, index: int = 0) -> None:
    """Raise unless GPU ``index`` exists, naming ``what`` needs it and the fix."""
    api = cuda_api()
    if not api.is_available():
        raise BackendUnavailableError(f"{what} needs a CUDA GPU, and PyTorch sees none here; "
                                      "measure on a GPU machine or drop this runtime")
    if index >= api.device_count():
        raise BackendUnavailableError(
            f"{what}: bench.gpu.device is {index}, but this machine has {api.device_count()} "
            f"GPU(s) (0..{api.device_count() - 1}); set bench.gpu.device to one of them")


def cuda_event_ms(step: Callable[[], object], iterations: int, warmup: int,
                  stream: Any = None) -> list[float]:
    """Milliseconds per ``step()`` call after ``warmup`` untimed calls, from CUDA events
    recorded on ``stream`` (the current stream when None) around each call."""
    times = []
    for i in range(warmup + iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        step()
        end.record(stream)
        end.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end))
    return times


# Published dense FP16 tensor-core peaks (TFLOP/s, FP32 accumulate, no sparsity), by a
# substring of the name CUDA reports; the most specific entry first.
_FP16_PEAK_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("A30", 165.0),
    ("A10G", 70.0), ("A10", 125.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("T4", 65.0), ("V100", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0),
    ("RTX A6000", 155.0), ("RTX 6000 Ada", 365.0),
)


def peak_fp16_tflops(name: str, measure: Callable[[], float] | None = None) -> tuple[float, str]:
    """The GPU's dense FP16 peak and where the figure comes from (``"table"`` or
    ``"measured"``): the table when ``name`` is in it, else ``measure()`` (a large FP16 matmul
    on the GPU, :func:`measure_matmul_tflops`), which reaches near the real peak."""
    for key, tflops in _FP16_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops, "table"
    if measure is None:
        raise BackendUnavailableError(f"no FP16 peak is known for GPU {name!r}; measure it")
    return measure(), "measured"


def measure_matmul_tflops(index: int = 0, n: int = 8192, iterations: int = 20) -> float:
    """TFLOP/s of an ``n x n`` FP16 matmul on GPU ``index`` (median of CUDA-event timings)."""
    api = cuda_api()
    a = torch.randn(n, n, device=api.device(index), dtype=torch.float16)
    b = torch.randn_like(a)
    times = api.time_ms(lambda: a @ b, iterations, 3)
    ms = sorted(times)[len(times) // 2]
    return 2 * n**3 / (ms / 1e3) / 1e12
