"""The one table of runtimes: each named once, with what it runs on, what it needs, whether an
INT8 artifact runs there as integer kernels, and the function that builds its runner.

Every part of deploykit reads names from here: the recipe schema (``bench.runtimes``,
``gates``, ``tune.latency``), the availability check, the measurement loop (latency rows are
keyed by :attr:`RuntimeInfo.name`), the report, the gate and ``deploykit tune``. Adding a
runtime is one row here and one runner module under ``deploykit/runtimes/``.

Example:
    >>> from deploykit.recipe.runtimes import runtime_info
    >>> runtime_info("tensorrt").device, runtime_info("tensorrt").int8_native
    ('cuda', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["RUNTIMES", "RUNTIME_TABLE", "Runtime", "RuntimeInfo", "legacy_runtime_name",
           "runtime_info"]


@dataclass(frozen=True)
class RuntimeInfo:
    """One runtime.

    Attributes:
        name: the name recipes, latency rows, gates and ``tune`` use.
        device: ``cpu`` or ``cuda``.
        runs: ``module`` (the PyTorch model) or ``onnx`` (the exported artifact).
        needs: the Python package that must import (and ``provider``, if any, must be offered).
        install: what to run when it is missing.
        int8_native: an INT8 artifact runs as integer kernels (``False``: a float simulation,
            which is never reported as INT8 latency).
        runner: ``module:function`` that builds its runner (see ``deploykit.runtimes``).
        provider: ONNX Runtime's execution provider, for ONNX Runtime's rows.
        label: how report tables head its columns.
        ov_device: OpenVINO's device (``CPU``, ``GPU``, ``NPU``), for OpenVINO's rows.
    """

    name: str
    device: str
    runs: str
    needs: str
    install: str
    int8_native: bool
    runner: str
    provider: str | None = None
    label: str = ""
    ov_device: str | None = None


RUNTIME_TABLE: tuple[RuntimeInfo, ...] = (
    RuntimeInfo("torch-cpu", "cpu", "module", "torch", "pip install deploykit", False,
                "deploykit.runtimes.runners:torch_cpu", label="PyTorch CPU"),
    RuntimeInfo("onnxruntime-cpu", "cpu", "onnx", "onnxruntime", "pip install deploykit", True,
                "deploykit.runtimes.ort:onnxruntime_runner", "CPUExecutionProvider", "ORT CPU"),
    RuntimeInfo("openvino-cpu", "cpu", "onnx", "openvino", 'pip install "deploykit[openvino]"',
                True, "deploykit.runtimes.openvino:openvino_runner", label="OpenVINO CPU",
                ov_device="CPU"),
    RuntimeInfo("torch-cuda", "cuda", "module", "torch", "a CUDA build of PyTorch on a machine "
                "with an NVIDIA GPU", False, "deploykit.runtimes.gpu:torch_cuda",
                label="PyTorch CUDA"),
    RuntimeInfo("onnxruntime-cuda", "cuda", "onnx", "onnxruntime",
                'pip install "deploykit[gpu]" (onnxruntime-gpu) on a CUDA machine', True,
                "deploykit.runtimes.ort:onnxruntime_runner", "CUDAExecutionProvider", "ORT CUDA"),
    RuntimeInfo("onnxruntime-tensorrt", "cuda", "onnx", "onnxruntime",
                'pip install "deploykit[gpu]" (onnxruntime-gpu) on a CUDA machine', True,
                "deploykit.runtimes.ort:onnxruntime_runner", "TensorrtExecutionProvider",
                "ORT TensorRT"),
    RuntimeInfo("tensorrt", "cuda", "onnx", "tensorrt", 'pip install "deploykit[tensorrt]"',
                True, "deploykit.runtimes.tensorrt:tensorrt_runner", label="TensorRT"),
    RuntimeInfo("openvino-gpu", "intel-gpu", "onnx", "openvino",
                'pip install "deploykit[openvino]" on a machine with an Intel GPU and its driver',
                True, "deploykit.runtimes.openvino:openvino_runner", label="OpenVINO GPU",
                ov_device="GPU"),
    RuntimeInfo("openvino-npu", "npu", "onnx", "openvino",
                'pip install "deploykit[openvino]" on a machine with an Intel NPU and its driver',
                True, "deploykit.runtimes.openvino:openvino_runner", label="OpenVINO NPU",
                ov_device="NPU"),
)

RUNTIMES: tuple[str, ...] = tuple(r.name for r in RUNTIME_TABLE)
"""Every runtime a candidate can be measured on, in the table's order."""

Runtime = Literal[RUNTIMES]  # type: ignore[valid-type]  # the recipe's field type

_BY_NAME = {r.name: r for r in RUNTIME_TABLE}


def runtime_info(name: str) -> RuntimeInfo:
    """The table's row for ``name``.

    Raises:
        KeyError: no such runtime, naming the ones there are.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown runtime {name!r}; available: {', '.join(RUNTIMES)}") from None


def legacy_runtime_name(engine: str, device: str, setup: str | None) -> str:
    """The table name of a latency row of a schema-1 report, which stored the engine and the
    device apart (and so wrote ONNX Runtime's TensorRT EP as ``onnxruntime-cuda`` and TensorRT
    as ``tensorrt-cuda``)."""
    if engine == "onnxruntime" and device == "cuda" and (setup or "").startswith("TensorRT EP"):
        return "onnxruntime-tensorrt"
    return "tensorrt" if engine == "tensorrt" else f"{engine}-{device}"
