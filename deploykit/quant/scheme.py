"""Quantization schemes per deployment target, defined once for PTQ and QAT."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from deploykit.host.cpu import u8s8_saturates

__all__ = ["REDUCED_WEIGHT_QMAX", "SCHEMES", "WEIGHT_QMAX", "WEIGHT_QMIN", "QuantScheme",
           "act_qparams", "scheme_for"]

# Weights: int8, symmetric, per output channel (per tensor where a scheme says), zero point 0,
# range [-127, 127] (TensorRT and ONNX Runtime both accept it; the symmetric range avoids the
# -128 asymmetry).
WEIGHT_QMIN, WEIGHT_QMAX = -127, 127
# 7-bit weights, where ONNX Runtime's uint8 x int8 kernels would saturate (see scheme_for)
REDUCED_WEIGHT_QMAX = 63


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
    # Weights in [-weight_qmax, weight_qmax]: 127, or 63 (7 bits) where products saturate.
    weight_qmax: int = WEIGHT_QMAX

    @property
    def weight_bits(self) -> int:
        """Bits the weights use: 8, or 7 where ``weight_qmax`` is reduced."""
        return (2 * self.weight_qmax + 1).bit_length()


_TARGETS: dict[str, QuantScheme] = {
    # TensorRT builds explicitly quantized engines from signed, symmetric Q/DQ.
    "tensorrt": QuantScheme("tensorrt", torch.int8, -128, 127, act_symmetric=True,
                            int8_maxpool=True),
    # ONNX Runtime's CPU integer kernels (QLinearConv via MLAS) are fast with uint8
    # activations and int8 weights; signed activations leave many convs in float. Its uint8
    # max-pool is a slow generic kernel (2-3 ms on resnet18's stem at batch 1, the float one
    # 0.1 ms), so the pool stays float.
    "onnxruntime-cpu": QuantScheme("onnxruntime-cpu", torch.uint8, 0, 255, act_symmetric=False,
                                   int8_maxpool=False),
    # OpenVINO's low-precision transformations turn each Q/DQ pair before a convolution or
    # matrix product into an integer kernel: uint8 activations (a zero point where the range
    # is not one-sided) times int8 per-channel weights run as u8 kernels; signed symmetric
    # activations ran 5-20% slower (resnet18, mobilenet_v2 at 224, AVX2 CPU). Its uint8
    # max-pool is as fast as the float one, so pools stay INT8 (no requantizing around them).
    "openvino": QuantScheme("openvino", torch.uint8, 0, 255, act_symmetric=False,
                            int8_maxpool=True),
}


def scheme_for(target: str, features: list[str] | None = None) -> QuantScheme:
    """The scheme for ``target`` on a CPU with INT8 ``features`` (default: this machine's).

    ``onnxruntime-cpu`` and ``openvino`` on an x86 CPU without VNNI get 7-bit weights: there
    the uint8 x int8 kernels (ONNX Runtime's, and oneDNN's under OpenVINO) add pairs of
    products in 16 bits and saturate (255 x 127 x 2 does not fit), so the artifact would
    compute something other than the calibrated model; ONNX Runtime's quantization guide gives
    the same remedy ("reduce range"). A random-weight mobilenet_v2's INT8 logits departed from
    its fake-quant model's by 5% of their range with 8-bit weights in both runtimes on an AVX2
    CPU, 0.4% with 7-bit ones. On such a CPU a
    random-weight FCOS's INT8 artifact matched 83% of its fake-quant model's detections with
    8-bit weights and over 90% with 7-bit ones.

    Raises:
        KeyError: no such target.
    """
    scheme = _TARGETS[target]
    if target in ("onnxruntime-cpu", "openvino") and u8s8_saturates(features):
        return dataclasses.replace(scheme, weight_qmax=REDUCED_WEIGHT_QMAX)
    return scheme


class _Schemes(Mapping[str, QuantScheme]):
    """``SCHEMES[target]``: :func:`scheme_for` ``target`` on this machine."""

    def __getitem__(self, target: str) -> QuantScheme:
        return scheme_for(target)

    def __iter__(self) -> Iterator[str]:
        return iter(_TARGETS)

    def __len__(self) -> int:
        return len(_TARGETS)


SCHEMES: Mapping[str, QuantScheme] = _Schemes()


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
