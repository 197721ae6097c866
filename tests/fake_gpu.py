"""Fakes of what the GPU runners call, for CI without a GPU: a CUDA API (tensors stay on the
CPU, a synthetic clock), TensorRT's Python API and onnxruntime-gpu's providers and I/O binding.

The fake clock charges every kernel a launch cost unless it runs inside a replayed CUDA graph,
plus compute proportional to its output size, halved in fp16/bf16: enough for the runners'
paths (precision casts, channels-last inputs, graph capture and replay per shape, event
timing, peak memory) to be checked with exact numbers.
"""

from __future__ import annotations

import ctypes
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from deploykit.runtimes.cuda import CudaApi

LAUNCH_MS = 0.01          # per kernel outside a graph
MS_PER_MELEM = 0.5        # per million output elements in fp32; half in fp16 / bf16


class FakeCudaApi(CudaApi):
    """One or more fake GPUs named ``name``; ``clock`` (ms) defaults to the synthetic one."""

    def __init__(self, name: str = "NVIDIA H100 80GB HBM3", count: int = 1,
                 clock: Callable[[], float] | None = None) -> None:
        self.name, self.count = name, count
        self.t_ms = 0.0
        self._clock = clock
        self.in_graph = False
        self.captures: list[tuple[int, ...]] = []
        self.replays = 0
        self.syncs = 0
        self.allocated = 0
        self.peak = 0
        self.timed_streams: list[Any] = []

    def now(self) -> float:
        return self._clock() if self._clock is not None else self.t_ms

    def charge(self, out: torch.Tensor) -> None:
        """A kernel wrote ``out``: advance the clock and the memory peak."""
        rate = 2.0 if out.dtype in (torch.float16, torch.bfloat16) else 1.0
        self.t_ms += (0.0 if self.in_graph else LAUNCH_MS) + out.numel() / 1e6 * MS_PER_MELEM / rate
        self.peak = max(self.peak, self.allocated + out.numel() * out.element_size())

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.count

    def device_name(self, index: int) -> str:
        return self.name

    def device(self, index: int) -> torch.device:
        return torch.device("cpu")

    def capture(self, fn, static_in):
        for _ in range(3):
            fn(static_in)
        static_out = fn(static_in)
        self.captures.append(tuple(static_in.shape))

        def replay():
            self.replays += 1
            self.in_graph = True
            try:
                static_out.copy_(fn(static_in))
            finally:
                self.in_graph = False
            return static_out

        return replay, static_out

    def time_ms(self, step, iterations, warmup, stream=None):
        self.timed_streams.append(stream)
        times = []
        for i in range(warmup + iterations):
            t0 = self.now()
            step()
            if i >= warmup:
                times.append(self.now() - t0)
        return times

    def new_stream(self, index):
        return types.SimpleNamespace(handle=1234 + index)

    def stream_handle(self, stream):
        return stream.handle

    def synchronize(self, index):
        self.syncs += 1

    def synchronize_stream(self, stream):
        self.syncs += 1

    def memory_allocated(self, index):
        return self.allocated

    def reset_peak_memory(self, index):
        self.peak = self.allocated

    def max_memory_allocated(self, index):
        return self.peak


def costed(model: nn.Module, api: FakeCudaApi, seen: list | None = None) -> nn.Module:
    """Make every leaf module of ``model`` charge ``api``'s clock; ``seen`` collects each
    convolution's input (dtype, channels_last?)."""
    for m in model.modules():
        if next(m.children(), None) is None:
            m.register_forward_hook(lambda mod, inp, out: api.charge(out))
            if isinstance(m, nn.Conv2d) and seen is not None:
                m.register_forward_pre_hook(lambda mod, inp: seen.append(
                    (inp[0].dtype, inp[0].is_contiguous(memory_format=torch.channels_last)
                     and not inp[0].is_contiguous())))
    return model


# ---- TensorRT ---------------------------------------------------------------------------


def _view(ptr: int, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * n).from_address(ptr)).reshape(shape)


def fake_tensorrt(model: nn.Module | None, num_classes: int, calls: dict) -> types.ModuleType:
    """A ``tensorrt`` module whose engines run on the CPU: ``model`` if given, else the ONNX file
    the engine was built from (in ONNX Runtime's CPU EP, so a whole recipe can be timed on it):
    the builder, ONNX parser, runtime and named-tensor execution context the runner uses,
    counting builds in ``calls``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.9.0"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: np.float32
    tag = b"fake-engine"

    def forward_of(serialized: bytes) -> Callable[[np.ndarray], np.ndarray]:
        if model is not None:
            def run_model(x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return model(torch.from_numpy(x)).numpy()
            return run_model
        import onnxruntime

        session = onnxruntime.InferenceSession(serialized[len(tag):],
                                               providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"input": x})[0]

    class Network:
        def __init__(self, flags):
            calls["network_flags"] = flags
            self.onnx = b""

        def get_input(self, i):
            return types.SimpleNamespace(name="input", shape=(-1, 3, 16, 16))

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls["profile"] = (name, lo, opt, hi)

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def add_optimization_profile(self, profile):
            pass

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls["builds"] = calls.get("builds", 0) + 1
            return tag if model is not None else tag + network.onnx

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network

        def parse(self, data):
            calls["parsed_bytes"] = len(data)
            self.network.onnx = data
            return True

    class Context:
        def __init__(self, forward):
            self.forward = forward
            self.shape: tuple[int, ...] = ()
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)

        def get_tensor_shape(self, name):
            return self.shape if name == "input" else (self.shape[0], num_classes)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def execute_async_v3(self, stream_handle):
            calls.setdefault("streams", []).append(stream_handle)
            y = self.forward(_view(self.addresses["input"], self.shape).copy())
            _view(self.addresses["logits"], y.shape)[...] = y
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, forward):
            self.forward = forward

        def get_tensor_name(self, i):
            return ("input", "logits")[i]

        def get_tensor_mode(self, name):
            return "in" if name == "input" else "out"

        def get_tensor_dtype(self, name):
            return "float"

        def create_execution_context(self):
            return Context(self.forward)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(forward_of(data)) if data.startswith(tag) else None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


# ---- onnxruntime-gpu --------------------------------------------------------------------


def fake_onnxruntime_gpu(real: types.ModuleType, calls: dict) -> types.ModuleType:
    """``onnxruntime`` with the CUDA and TensorRT providers listed: sessions run on the real
    CPU provider, record the providers they were given, and offer I/O binding."""
    ort = types.ModuleType("onnxruntime")
    for name in ("SessionOptions", "ExecutionMode", "GraphOptimizationLevel"):
        setattr(ort, name, getattr(real, name))
    ort.get_available_providers = lambda: ["TensorrtExecutionProvider",
                                           "CUDAExecutionProvider", "CPUExecutionProvider"]

    class OrtValue:
        @staticmethod
        def ortvalue_from_numpy(arr, device, device_id):
            calls["input_on"] = (device, device_id)
            return types.SimpleNamespace(array=arr)

    class Binding:
        def __init__(self):
            self.input = None
            self.outputs: list[tuple[str, str, int]] = []

        def bind_ortvalue_input(self, name, value):
            self.input = (name, value.array)

        def bind_output(self, name, device, device_id):
            self.outputs.append((name, device, device_id))

    class InferenceSession:
        def __init__(self, path, opts, providers):
            calls["providers"] = providers
            self._s = real.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        def __getattr__(self, name):
            return getattr(self._s, name)

        def io_binding(self):
            return Binding()

        def run_with_iobinding(self, binding):
            calls["iobinding_runs"] = calls.get("iobinding_runs", 0) + 1
            calls["bound_outputs"] = binding.outputs
            name, arr = binding.input
            self._s.run(None, {name: arr})

    ort.OrtValue, ort.InferenceSession = OrtValue, InferenceSession
    return ort
