"""Runtimes: one ``Runner`` interface (a float32 NCHW batch in, outputs out) over PyTorch,
ONNX Runtime's execution providers, OpenVINO and TensorRT. Each runtime is one row of the
runtime table (:data:`deploykit.recipe.RUNTIME_TABLE`: its name, device, needs and the factory
of its runner); OpenVINO and the GPU runners import their packages lazily, and every CUDA
call goes through :func:`~deploykit.runtimes.cuda.cuda_api` (a fake GPU in CI)."""

from deploykit.runtimes.availability import check_available, check_runtimes
from deploykit.runtimes.base import INT8_ON_TORCH_CPU, INT8_ON_TORCH_CUDA, Runner, RunnerRequest
from deploykit.runtimes.cuda import (
    CudaApi,
    TorchCudaApi,
    cuda_api,
    cuda_event_ms,
    peak_fp16_tflops,
    require_cuda,
    use_cuda_api,
)
from deploykit.runtimes.gpu import TorchCudaRunner, setup_name
from deploykit.runtimes.openvino import OpenVinoRunner, openvino_devices
from deploykit.runtimes.ort import OrtRunner, provider_options
from deploykit.runtimes.runners import TorchRunner, make_runner, make_runners
from deploykit.runtimes.tensorrt import TensorRTRunner, engine_cache_key

__all__ = [
    "INT8_ON_TORCH_CPU",
    "INT8_ON_TORCH_CUDA",
    "CudaApi",
    "OpenVinoRunner",
    "OrtRunner",
    "Runner",
    "RunnerRequest",
    "TensorRTRunner",
    "TorchCudaApi",
    "TorchCudaRunner",
    "TorchRunner",
    "check_available",
    "check_runtimes",
    "cuda_api",
    "cuda_event_ms",
    "engine_cache_key",
    "make_runner",
    "make_runners",
    "openvino_devices",
    "peak_fp16_tflops",
    "provider_options",
    "require_cuda",
    "setup_name",
    "use_cuda_api",
]
