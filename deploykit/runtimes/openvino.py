"""OpenVINO: Intel's deployment runtime, on the candidates' own ONNX files (float and QDQ INT8),
on the CPU and, where OpenVINO sees one, an Intel GPU or NPU.

OpenVINO reads the ONNX file directly. Its low-precision transformations turn the Q/DQ pairs
around a convolution or matrix multiplication into an integer kernel (the layer's runtime
precision is ``u8``/``i8``), so the INT8 artifact deploykit exports is the INT8 model OpenVINO
runs; :meth:`OpenVinoRunner.execution_precisions` reports what each compute layer ran in.

Settings, as a deployment would set them for one request at a time: ``PERFORMANCE_HINT:
LATENCY`` (one stream), ``INFERENCE_NUM_THREADS`` = the recipe's ``bench.threads``, and on the
CPU ``INFERENCE_PRECISION_HINT: f32``, so a float candidate runs in fp32 on every CPU (OpenVINO
would otherwise pick bf16 on CPUs with AMX or AVX-512 BF16, and its outputs would no longer be
the fp32 model's). A model is compiled once per batch size with that batch fixed (static
shapes are OpenVINO's fast path); a model whose batch is not a free dimension is compiled as
it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deploykit.errors import BackendUnavailableError, ModelError

if TYPE_CHECKING:
    from deploykit.recipe import RuntimeInfo
    from deploykit.runtimes.base import RunnerRequest

__all__ = ["COMPUTE_LAYERS", "OpenVinoRunner", "import_openvino", "openvino_devices",
           "openvino_runner", "require_openvino_device"]

INSTALL = 'pip install "deploykit[openvino]"'
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul",
                  "Deconvolution")
"""OpenVINO's executed layer types that carry a model's MACs."""
_MAX_COMPILED = 4   # compiled models kept per runner (one per batch size seen last)


def import_openvino() -> Any:
    """The ``openvino`` module.

    Raises:
        BackendUnavailableError: it is not installed, with the command that installs it.
    """
    try:
        import openvino
    except ImportError:
        raise BackendUnavailableError(
            f"OpenVINO is not installed: run {INSTALL} (or pip install openvino), or remove "
            "the openvino-* runtime from bench.runtimes") from None
    return openvino


def openvino_devices() -> list[str]:
    """The devices OpenVINO sees here (``CPU``, ``GPU``, ``GPU.0``, ``NPU``, ...)."""
    return list(import_openvino().Core().available_devices)


def require_openvino_device(device: str, what: str) -> None:
    """Raise unless OpenVINO is installed and sees ``device`` (``CPU``, ``GPU``, ``NPU``).

    Raises:
        BackendUnavailableError: naming ``what`` needs it and what this machine has.
    """
    have = openvino_devices()
    if not any(d == device or d.startswith(device + ".") for d in have):
        raise BackendUnavailableError(
            f"{what} needs an OpenVINO {device} device, which this machine does not have "
            f"(OpenVINO sees: {', '.join(have) or 'none'}); run it where one is present (an "
            "Intel GPU or NPU with its driver installed), or remove it from bench.runtimes")


def openvino_runner(info: RuntimeInfo, req: RunnerRequest) -> OpenVinoRunner:
    """The factory of the OpenVINO rows (one per OpenVINO device)."""
    return OpenVinoRunner(req.onnx_path, req.threads, req.precision,
                          device=info.ov_device or "CPU", name=info.name)


class OpenVinoRunner:
    """An ONNX file compiled by OpenVINO for ``device`` with ``threads`` inference threads and
    the latency hint; one compiled model per batch size.

    Raises:
        BackendUnavailableError: OpenVINO is missing or does not see ``device``.
        ModelError: OpenVINO cannot read the file.
    """

    runtime = "openvino"

    def __init__(self, path: str | Path, threads: int = 2, precision: str = "fp32",
                 device: str = "CPU", name: str = "openvino-cpu") -> None:
        ov = import_openvino()
        require_openvino_device(device, f"runtime {name}")
        self.path, self.threads, self.precision = Path(path), threads, precision
        self.ov_device, self.name = device, name
        self.device = device.lower()
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(self.path))
        except RuntimeError as e:
            raise ModelError(f"OpenVINO cannot read {self.path}: {str(e).splitlines()[0]}") \
                from None
        self.output_names = _output_names(self.path, len(self.model.outputs))
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                       "INFERENCE_NUM_THREADS": threads}
        if device == "CPU":
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        self.setup = f"{device}, latency hint, {threads} threads"
        self._compiled: dict[int, tuple[Any, Any]] = {}

    def _request(self, batch: int) -> tuple[Any, Any]:
        if batch in self._compiled:
            return self._compiled[batch]
        model = self.model.clone()
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_static and len(shape) > 0 and shape[0].is_dynamic:
            new = [batch] + [d.get_length() if d.is_static else -1 for d in list(shape)[1:]]
            model.reshape({model.inputs[0]: new})
        compiled = self.core.compile_model(model, self.ov_device, self.config)
        if len(self._compiled) >= _MAX_COMPILED:
            self._compiled.pop(next(iter(self._compiled)))
        self._compiled[batch] = (compiled, compiled.create_infer_request())
        return self._compiled[batch]

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        compiled, request = self._request(int(x.shape[0]))
        request.infer({0: np.ascontiguousarray(x, np.float32)})
        return [np.array(request.get_output_tensor(i).data, copy=True)
                for i in range(len(compiled.outputs))]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._infer(x)[0]

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by the ONNX file's output names (a detector's boxes, scores, labels)."""
        return dict(zip(self.output_names, self._infer(x), strict=True))

    def execution_precisions(self, batch: int = 1) -> dict[str, str]:
        """Each executed compute layer (:data:`COMPUTE_LAYERS`) of the model compiled for
        ``batch`` -> the precision it ran in (``f32``, ``u8``, ``i8``, ``bf16``, ...), from
        the compiled model's runtime graph."""
        compiled, _ = self._request(batch)
        out = {}
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind = info["layerType"].astype(str) if "layerType" in info else ""
            if kind in COMPUTE_LAYERS:
                out[op.get_friendly_name()] = info["runtimePrecision"].astype(str)
        return out


def _output_names(path: Path, count: int) -> list[str]:
    """The ONNX graph's output names, in order (what ONNX Runtime calls its outputs)."""
    import onnx

    names = [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]
    return names if len(names) == count else [f"output{i}" for i in range(count)]
