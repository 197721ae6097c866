"""ONNX Runtime sessions: the CPU execution provider, and the CUDA and TensorRT execution
providers of onnxruntime-gpu with their documented provider options and I/O binding.

onnxruntime-gpu has no GPU to run on in the project's machines: CI runs the GPU paths against
a fake ``onnxruntime`` module (provider options, ``io_binding``, ``run_with_iobinding``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deploykit.errors import BackendUnavailableError
from deploykit.recipe import RUNTIME_TABLE

if TYPE_CHECKING:
    from deploykit.recipe import RuntimeInfo
    from deploykit.runtimes.base import RunnerRequest

__all__ = ["OrtRunner", "onnxruntime_runner", "provider_options"]

# ONNX Runtime's execution provider -> the runtime table's name for it
_NAMES = {r.provider: r.name for r in RUNTIME_TABLE if r.provider is not None}


def provider_options(provider: str, device_index: int = 0, precision: str = "fp32",
                     fp16: bool = False, cache_dir: Path | None = None) -> list[Any]:
    """The ``providers`` list for ``InferenceSession``: the provider with its options, then
    the fallbacks ONNX Runtime assigns unsupported nodes to.

    CUDA EP: the GPU, and cuDNN's exhaustive convolution search (what a deployment tunes once).
    TensorRT EP: the GPU, FP16 when ``fp16`` (an fp32 file; TensorRT picks per layer), INT8 for
    a QDQ file, and the engine and timing caches in ``cache_dir``, so a second session does not
    rebuild the engine. CUDA EP then CPU EP take what TensorRT cannot.
    """
    cuda = ("CUDAExecutionProvider", {"device_id": device_index,
                                      "cudnn_conv_algo_search": "EXHAUSTIVE",
                                      "do_copy_in_default_stream": True})
    if provider == "CPUExecutionProvider":
        return [provider]
    if provider == "CUDAExecutionProvider":
        return [cuda, "CPUExecutionProvider"]
    trt: dict[str, Any] = {"device_id": device_index, "trt_fp16_enable": bool(fp16),
                           "trt_int8_enable": precision == "int8"}
    if cache_dir is not None:
        trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir),
                   trt_timing_cache_enable=True, trt_timing_cache_path=str(cache_dir))
    return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]


def onnxruntime_runner(info: RuntimeInfo, req: RunnerRequest) -> OrtRunner:
    """The factory of the ONNX Runtime rows (one per execution provider)."""
    return OrtRunner(req.onnx_path, req.threads, req.precision, provider=info.provider,
                     device_index=req.gpu.device, fp16="fp16" in req.gpu.precisions)


class OrtRunner:
    """An ONNX Runtime session on ``provider`` (CPU by default) with fixed thread counts.

    On a GPU provider, :meth:`device_ms` times runs with the input and output bound on the GPU
    (I/O binding: no host copies), beside the end-to-end ``__call__``.
    """

    def __init__(self, path: str | Path, threads: int = 2, precision: str = "fp32",
                 provider: str = "CPUExecutionProvider", device_index: int = 0,
                 fp16: bool = False) -> None:
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
        self.providers = provider_options(provider, device_index, precision, fp16,
                                          self.path.parent / "trt-cache")
        self.session = ort.InferenceSession(str(path), opts, providers=self.providers)
        self.input_name = self.session.get_inputs()[0].name
        self.threads, self.precision = threads, precision
        self.runtime, self.device_index = "onnxruntime", device_index
        self.name = _NAMES[provider]
        self.device = "cpu" if provider == "CPUExecutionProvider" else "cuda"
        self.setup = {"CPUExecutionProvider": f"CPU EP, {threads} threads",
                      "CUDAExecutionProvider": "CUDA EP, I/O binding for device time",
                      "TensorrtExecutionProvider":
                          f"TensorRT EP{', FP16 allowed' if fp16 else ''}"}[provider]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output by name (the divergence search marks intermediate tensors)."""
        names = [o.name for o in self.session.get_outputs()]
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})
        return dict(zip(names, outs, strict=True))

    def device_ms(self, x: np.ndarray, iterations: int = 50, warmup: int = 10) -> list[float]:
        """GPU providers: milliseconds per run with input and outputs bound in GPU memory
        (``run_with_iobinding``, which returns once the outputs are ready)."""
        if self.device == "cpu":
            raise BackendUnavailableError("device time needs a GPU execution provider")
        import onnxruntime as ort

        binding = self.session.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x, np.float32), "cuda",
                                                 self.device_index)
        binding.bind_ortvalue_input(self.input_name, value)
        for out in self.session.get_outputs():
            binding.bind_output(out.name, "cuda", self.device_index)
        times = []
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            self.session.run_with_iobinding(binding)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
        return times
