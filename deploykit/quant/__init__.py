"""INT8 quantization: schemes, calibrators, fake-quant modules, graph preparation, sensitivity.

One design serves PTQ and QAT: the model is traced with torch.fx, BatchNorm is folded into the
convolution it follows, and fake-quant modules are placed on the inputs of every quantized
conv/linear and of residual additions. PTQ only calibrates them; QAT then fine-tunes through
them (straight-through gradients). For export the same modules emit explicit
QuantizeLinear/DequantizeLinear (int8 weight initializers) through the dynamo ONNX exporter.
"""

from deploykit.quant.attention import QuantAttention
from deploykit.quant.build import Fp16Model, build_quantized
from deploykit.quant.calib import Calibrator, make_calibrator
from deploykit.quant.modules import ActQuant, QuantLayer, qdq_export, weight_scales
from deploykit.quant.prepare import QuantizedModel, compute_layers, prepare, resolve_keep_float
from deploykit.quant.qat import qat_finetune
from deploykit.quant.scheme import SCHEMES, QuantScheme, act_qparams
from deploykit.quant.sensitivity import (
    LayerSensitivity,
    accuracy_on,
    keep_sensitive_float,
    layer_sensitivity,
    sqnr_db,
)

__all__ = [
    "SCHEMES",
    "ActQuant",
    "Calibrator",
    "Fp16Model",
    "LayerSensitivity",
    "QuantAttention",
    "QuantLayer",
    "QuantScheme",
    "QuantizedModel",
    "accuracy_on",
    "act_qparams",
    "build_quantized",
    "compute_layers",
    "keep_sensitive_float",
    "layer_sensitivity",
    "make_calibrator",
    "prepare",
    "qat_finetune",
    "qdq_export",
    "resolve_keep_float",
    "sqnr_db",
    "weight_scales",
]
