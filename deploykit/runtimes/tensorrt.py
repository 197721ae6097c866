"""Native TensorRT engines built from the exported ONNX file, cached on disk by what makes an
engine valid (the model, TensorRT's version, the GPU and the shape profile).

TensorRT is imported when a runner is built, never at import time, and is not installable on
the project's machines: CI runs this code against a fake of TensorRT's documented Python API
(builder, ONNX parser, runtime, named-tensor execution context) on a fake GPU; it has not run
against the real library.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from deploykit.errors import BackendUnavailableError
from deploykit.runtimes.cuda import cuda_api, require_cuda

if TYPE_CHECKING:
    from deploykit.recipe import RuntimeInfo
    from deploykit.runtimes.base import RunnerRequest

__all__ = ["TensorRTRunner", "engine_cache_key", "import_tensorrt", "tensorrt_runner"]


def engine_cache_key(onnx_bytes: bytes, trt_version: str, gpu: str, max_batch: int) -> str:
    """Engines are specific to the model, the TensorRT version, the GPU and the shape profile."""
    h = hashlib.sha256(onnx_bytes)
    h.update(f"|trt={trt_version}|gpu={gpu}|max_batch={max_batch}".encode())
    return h.hexdigest()[:32]


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(
            'runtime tensorrt needs the TensorRT Python package: pip install "deploykit[tensorrt]" '
            "(and an NVIDIA GPU with a matching driver)") from None
    return trt


def tensorrt_runner(info: RuntimeInfo, req: RunnerRequest) -> TensorRTRunner:
    """The ``tensorrt`` row's factory: an engine for the batch sizes up to ``max_batch``."""
    return TensorRTRunner(req.onnx_path, req.precision, req.max_batch, device_index=req.gpu.device)


class TensorRTRunner:
    """A TensorRT engine built from an exported ONNX file, cached on disk, run from CUDA memory
    allocated once (PyTorch tensors as buffers, one CUDA stream).

    The network is created strongly typed when TensorRT offers it (10.x flag; the only mode in
    11.x): precisions come from the ONNX file, so a QDQ file gives an explicit INT8 engine and
    an FP16 file an FP16 engine. One optimisation profile covers batch 1..``max_batch``.
    """

    def __init__(self, onnx_path: str | Path, precision: str = "fp32", max_batch: int = 64,
                 cache_dir: str | Path | None = None, workspace_gb: float = 2.0,
                 device_index: int = 0) -> None:
        require_cuda("runtime tensorrt", device_index)
        trt = import_tensorrt()
        self.api, self.device_index = cuda_api(), device_index
        self.torch_device = self.api.device(device_index)
        self.trt, self.precision, self.threads = trt, precision, 1
        self.runtime, self.device, self.name = "tensorrt", "cuda", "tensorrt"
        self.logger = trt.Logger(trt.Logger.WARNING)
        onnx_bytes = Path(onnx_path).read_bytes()
        gpu = self.api.device_name(device_index)
        cache = Path(cache_dir or Path(onnx_path).parent / "trt-cache")
        key = engine_cache_key(onnx_bytes, trt.__version__, gpu, max_batch)
        self.engine_path = cache / f"{key}.engine"
        if self.engine_path.is_file():
            serialized = self.engine_path.read_bytes()
            self.cache_hit = True
        else:
            serialized = self._build(onnx_bytes, max_batch, workspace_gb)
            from deploykit.runfiles.atomic import write_with

            write_with(self.engine_path, lambda p: p.write_bytes(serialized))
            self.cache_hit = False
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise BackendUnavailableError(f"{self.engine_path}: TensorRT could not load the "
                                          "engine; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.stream = self.api.new_stream(device_index)
        self.setup = f"TensorRT engine, {precision} ONNX file"
        self._buffers: dict[tuple[int, ...], dict[str, torch.Tensor]] = {}

    def _build(self, onnx_bytes: bytes, max_batch: int, workspace_gb: float) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        network = builder.create_network(0 if flag is None else 1 << int(flag))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailableError(f"TensorRT cannot parse the ONNX file: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
        if flag is None and self.precision in ("fp16", "int8"):   # weakly typed (old TensorRT)
            config.set_flag(trt.BuilderFlag.FP16)
            if self.precision == "int8":
                config.set_flag(trt.BuilderFlag.INT8)
        inp = network.get_input(0)
        chw = tuple(inp.shape)[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, *chw), (max_batch, *chw), (max_batch, *chw))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendUnavailableError("TensorRT failed to build an engine (see its log above)")
        return bytes(serialized)

    def _io(self, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        if shape not in self._buffers:   # allocated once per input shape, then reused
            self.context.set_input_shape(self.input_name, shape)
            bufs = {}
            for name in [self.input_name, *self.output_names]:
                dims = tuple(self.context.get_tensor_shape(name))
                dtype = torch.from_numpy(np.empty(0, self.trt.nptype(
                    self.engine.get_tensor_dtype(name)))).dtype
                bufs[name] = torch.empty(dims, dtype=dtype, device=self.torch_device)
            self._buffers[shape] = bufs
        bufs = self._buffers[shape]
        self.context.set_input_shape(self.input_name, shape)
        for name, t in bufs.items():
            self.context.set_tensor_address(name, t.data_ptr())
        return bufs

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x, self.output_names[:1])[self.output_names[0]]

    def device_ms(self, x: np.ndarray, iterations: int = 50, warmup: int = 10) -> list[float]:
        """Engine time per batch (ms), CUDA events around ``execute_async_v3``, input resident."""
        bufs = self._io(tuple(x.shape))
        bufs[self.input_name].copy_(torch.from_numpy(np.ascontiguousarray(x)))
        self.api.synchronize(self.device_index)
        handle = self.api.stream_handle(self.stream)
        return self.api.time_ms(lambda: self.context.execute_async_v3(handle), iterations,
                                warmup, self.stream)

    def run_all(self, x: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every engine output (or ``names``) as float32 arrays: with the intermediate tensors
        marked as outputs, this is what :func:`~deploykit.bench.divergence.find_divergence`
        compares layer by layer."""
        bufs = self._io(tuple(x.shape))
        bufs[self.input_name].copy_(torch.from_numpy(np.ascontiguousarray(x)))
        self.api.synchronize(self.device_index)   # the copy is done before the engine reads it
        self.context.execute_async_v3(self.api.stream_handle(self.stream))
        self.api.synchronize_stream(self.stream)
        return {n: bufs[n].to("cpu", torch.float32, copy=True).numpy()
                for n in (names or self.output_names)}
