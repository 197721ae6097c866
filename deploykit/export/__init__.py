"""Exporters: PyTorch model -> deployable artifact, checked by ``onnx.checker``.

Never imports ``deploykit.bench`` or a technique package: a model that must change for export
(INT8 Q/DQ) brings its own ``export_context()`` hook.
"""

from deploykit.export.detection import (
    DETECTION_INPUT,
    DETECTION_OUTPUTS,
    export_detector,
    export_network,
)
from deploykit.export.onnx import INPUT_NAME, OUTPUT_NAME, ExportError, export_onnx

__all__ = ["DETECTION_INPUT", "DETECTION_OUTPUTS", "INPUT_NAME", "OUTPUT_NAME", "ExportError",
           "export_detector", "export_network", "export_onnx"]
