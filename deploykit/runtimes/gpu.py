"""GPU runners: PyTorch on CUDA, ONNX Runtime's CUDA/TensorRT execution providers, and native
TensorRT engines built from the exported ONNX file.

Nothing here imports CUDA libraries at import time. Each runner checks what it needs when it is
built and raises :class:`BackendUnavailableError` naming what to install. None of these paths
has run on the project's machines (no GPU, TensorRT not installable); they follow the
documented APIs (PyTorch CUDA events/graphs, ONNX Runtime provider options, TensorRT 10/11
named-tensor API) and their tests skip with the reason where the GPU or package is missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deploykit.errors import BackendUnavailableError

__all__ = ["TensorRTRunner", "TorchCudaRunner", "cuda_event_ms", "engine_cache_key", "require_cuda"]

_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise BackendUnavailableError(f"{what} needs a CUDA GPU, and PyTorch sees none here; "
                                      "measure on a GPU machine or drop this runtime")


@dataclass
class TorchCudaRunner:
    """PyTorch on one CUDA device.

    ``precision``: fp32, fp16 or bf16 (weights and inputs cast). ``channels_last``: NHWC memory
    format. ``cuda_graphs``: capture one forward per input shape and replay it (removes launch
    overhead, which dominates small models). ``compile``: ``torch.compile`` first.
    ``__call__`` is end-to-end (host -> device copy, compute, copy back, synchronised);
    :meth:`device_ms` times device compute alone with CUDA events.
    """

    model: nn.Module
    precision: str = "fp32"
    channels_last: bool = False
    cuda_graphs: bool = False
    compile: bool = False
    runtime: str = "torch"
    device: str = "cuda"
    threads: int = 1
    _graphs: dict[tuple[int, ...], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        require_cuda("runtime torch-cuda")
        if self.precision not in _TORCH_DTYPES:
            raise BackendUnavailableError(f"torch-cuda precision {self.precision!r}: choose "
                                          f"one of {', '.join(_TORCH_DTYPES)}")
        self.dtype = _TORCH_DTYPES[self.precision]
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.eval().to("cuda", self.dtype, memory_format=fmt)
        if self.compile:
            self.model = torch.compile(self.model)

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", self.dtype, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    @torch.inference_mode()
    def _forward(self, xd: torch.Tensor) -> torch.Tensor:
        if not self.cuda_graphs:
            return self.model(xd)
        key = tuple(xd.shape)
        if key not in self._graphs:
            static_in = xd.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm up on a side stream before capture, as documented
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(xd)
        graph.replay()
        return static_out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self._forward(self._to_device(x)).float().cpu().numpy()
        torch.cuda.synchronize()
        return out

    def device_ms(self, x: np.ndarray, iterations: int = 50, warmup: int = 10) -> list[float]:
        """Device time per forward (ms), from CUDA events around each call, input resident."""
        xd = self._to_device(x)
        return cuda_event_ms(lambda: self._forward(xd), iterations, warmup)


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


def engine_cache_key(onnx_bytes: bytes, trt_version: str, gpu: str, max_batch: int) -> str:
    """Engines are specific to the model, the TensorRT version, the GPU and the shape profile."""
    h = hashlib.sha256(onnx_bytes)
    h.update(f"|trt={trt_version}|gpu={gpu}|max_batch={max_batch}".encode())
    return h.hexdigest()[:32]


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(
            'runtime tensorrt needs the TensorRT Python package: pip install "deploykit[tensorrt]" '
            "(and an NVIDIA GPU with a matching driver)") from None
    return trt


class TensorRTRunner:
    """A TensorRT engine built from an exported ONNX file, cached on disk, run from CUDA memory
    allocated once (PyTorch tensors as buffers, one CUDA stream).

    The network is created strongly typed when TensorRT offers it (10.x flag; the only mode in
    11.x): precisions come from the ONNX file, so a QDQ file gives an explicit INT8 engine and
    an FP16 file an FP16 engine. One optimisation profile covers batch 1..``max_batch``.
    """

    def __init__(self, onnx_path: str | Path, precision: str = "fp32", max_batch: int = 64,
                 cache_dir: str | Path | None = None, workspace_gb: float = 2.0) -> None:
        require_cuda("runtime tensorrt")
        trt = _import_tensorrt()
        self.trt, self.precision, self.threads = trt, precision, 1
        self.runtime, self.device = "tensorrt", "cuda"
        self.logger = trt.Logger(trt.Logger.WARNING)
        onnx_bytes = Path(onnx_path).read_bytes()
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name}-sm{props.major}{props.minor}"
        cache = Path(cache_dir or Path(onnx_path).parent / "trt-cache")
        key = engine_cache_key(onnx_bytes, trt.__version__, gpu, max_batch)
        self.engine_path = cache / f"{key}.engine"
        if self.engine_path.is_file():
            serialized = self.engine_path.read_bytes()
            self.cache_hit = True
        else:
            serialized = self._build(onnx_bytes, max_batch, workspace_gb)
            from deploykit.atomic import write_with

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
        self.stream = torch.cuda.Stream()
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
                bufs[name] = torch.empty(dims, dtype=dtype, device="cuda")
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
        with torch.cuda.stream(self.stream):
            return cuda_event_ms(lambda: self.context.execute_async_v3(self.stream.cuda_stream),
                                 iterations, warmup, self.stream)

    def run_all(self, x: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every engine output (or ``names``) as float32 arrays: with the intermediate tensors
        marked as outputs, this is what :func:`~deploykit.bench.divergence.find_divergence`
        compares layer by layer."""
        bufs = self._io(tuple(x.shape))
        with torch.cuda.stream(self.stream):
            bufs[self.input_name].copy_(torch.from_numpy(np.ascontiguousarray(x)),
                                        non_blocking=False)
            self.context.execute_async_v3(self.stream.cuda_stream)
            outs = {n: bufs[n].float().cpu() for n in (names or self.output_names)}
        self.stream.synchronize()
        return {n: t.numpy() for n, t in outs.items()}
