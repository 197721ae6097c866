"""Exporters: PyTorch model -> deployable artifact, checked by ``onnx.checker``.

Never imports ``deploykit.bench`` or a technique package: a model that must change for export
(INT8 Q/DQ) brings its own ``export_context()`` hook. A task's own artifacts (a detector's
end-to-end graph) are built by the task from these pieces.
"""

from deploykit.export.onnx import INPUT_NAME, OUTPUT_NAME, ExportError, export_onnx

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "ExportError", "export_onnx"]
