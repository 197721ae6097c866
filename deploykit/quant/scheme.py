"""Quantization schemes per deployment target, defined once for PTQ and QAT."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SCHEMES", "WEIGHT_QMAX", "WEIGHT_QMIN", "QuantScheme", "act_qparams"]

# Weights: int8, symmetric, per output channel (per tensor where a scheme says), zero point 0,
# range [-127, 127] (TensorRT and ONNX Runtime both accept it; the symmetric range avoids the
# -128 asymmetry).
WEIGHT_QMIN, WEIGHT_QMAX = -127, 127


@dataclass(frozen=True)
class QuantScheme:
    """How activations are quantized for one target (weights are always as above)."""

    target: str
    act_dtype: torch.dtype
    act_qmin: int
    act_qmax: int
    act_symmetric: bool
    # Pool in INT8 (a quantizer on the max-pool's input too) or in float (the pool's quantizer
    # follows it, behind a ReLU that keeps ONNX Runtime from moving it above the pool).
    int8_maxpool: bool
    # Weight scales per output channel (the default everywhere), or one per tensor.
    per_channel_weights: bool = True


SCHEMES: dict[str, QuantScheme] = {
    # TensorRT builds explicitly quantized engines from signed, symmetric Q/DQ.
    "tensorrt": QuantScheme("tensorrt", torch.int8, -128, 127, act_symmetric=True,
                            int8_maxpool=True),
    # ONNX Runtime's CPU integer kernels (QLinearConv via MLAS) are fast with uint8
    # activations and int8 weights; signed activations leave many convs in float. Its uint8
    # max-pool is a slow generic kernel (2-3 ms on resnet18's stem at batch 1, the float one
    # 0.1 ms), so the pool stays float.
    "onnxruntime-cpu": QuantScheme("onnxruntime-cpu", torch.uint8, 0, 255, act_symmetric=False,
                                   int8_maxpool=False),
}


def act_qparams(scheme: QuantScheme, lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point covering ``[lo, hi]`` (always including 0) under ``scheme``."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    eps = 1e-8
    if scheme.act_symmetric:
        amax = max(-lo, hi, eps)
        return amax / scheme.act_qmax, 0
    scale = max(hi - lo, eps) / (scheme.act_qmax - scheme.act_qmin)
    zp = round(scheme.act_qmin - lo / scale)
    return scale, max(scheme.act_qmin, min(scheme.act_qmax, zp))
