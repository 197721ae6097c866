"""Runtimes: one ``Runner`` interface (a float32 NCHW batch in, logits out) over PyTorch,
ONNX Runtime's execution providers and TensorRT. The runtime names are
:data:`deploykit.recipe.RUNTIMES`; GPU runners import their packages lazily."""

from deploykit.runtimes.gpu import (
    TensorRTRunner,
    TorchCudaRunner,
    cuda_event_ms,
    engine_cache_key,
    require_cuda,
)
from deploykit.runtimes.runners import (
    OrtRunner,
    Runner,
    TorchRunner,
    check_available,
    make_runner,
)

__all__ = [
    "OrtRunner",
    "Runner",
    "TensorRTRunner",
    "TorchCudaRunner",
    "TorchRunner",
    "check_available",
    "cuda_event_ms",
    "engine_cache_key",
    "make_runner",
    "require_cuda",
]
