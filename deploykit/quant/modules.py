"""Fake-quant modules: calibrate -> fake-quantize (train/eval) -> explicit Q/DQ (ONNX export).

In PyTorch they simulate INT8 exactly as the exported graph computes it (round half to even,
clamp, dequantize), so the PyTorch model and the QDQ ONNX agree to rounding noise. During ONNX
export (:func:`qdq_export`) they emit ``quantized_decomposed`` quantize/dequantize ops, which
the dynamo exporter writes as QuantizeLinear/DequantizeLinear; weights become int8
initializers feeding a per-channel DequantizeLinear.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.errors import ModelError
from deploykit.quant.calib import Calibrator
from deploykit.quant.scheme import WEIGHT_QMAX, QuantScheme, act_qparams

__all__ = ["ActQuant", "QuantLayer", "qdq_export", "weight_scales"]


def _decomposed() -> object:
    import torch.ao.quantization.fx._decomposed

    return torch.ops.quantized_decomposed


class ActQuant(nn.Module):
    """Per-tensor quantizer of one activation.

    Modes: ``calibrate`` (observe, pass through), ``quant`` (fake-quantize; with ``ema`` on in
    training, ranges follow an exponential moving average of batch extremes), ``float``.
    """

    def __init__(self, scheme: QuantScheme, make_calibrator: Callable[[], Calibrator]):
        super().__init__()
        self.scheme = scheme
        self._make_calibrator = make_calibrator
        self.calibrator: Calibrator | None = None
        self.mode = "float"
        self.ema = False
        self.ema_momentum = 0.01
        self._export: tuple[float, int] | None = None  # (scale, zero point) while exporting
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))

    def start_calibration(self) -> None:
        self.calibrator = self._make_calibrator()
        self.mode = "calibrate"

    def finish_calibration(self, name: str = "an activation") -> None:
        """Fix the range from the calibrator and switch to fake-quant.

        Raises:
            ModelError: the range is NaN or infinite (the float model produced such values).
        """
        if self.calibrator is None:
            raise RuntimeError("finish_calibration() before start_calibration()")
        if not getattr(self.calibrator, "seen", True):   # on a path the data never took
            self.calibrator, self.mode = None, "float"
            return
        lo, hi = self.calibrator.range()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ModelError(
                f"quantize: {name} saw non-finite values (range {lo}, {hi}) during "
                "calibration: the float model produces NaN or inf on these images (a diverged "
                "training, or a checkpoint with NaN weights). Check the candidate's top-1, "
                "lower train.lr or set train.grad_clip, and rerun")
        self.set_range(lo, hi)
        self.calibrator = None
        self.mode = "quant"

    def set_range(self, lo: float, hi: float) -> None:
        self.lo.fill_(lo)
        self.hi.fill_(hi)
        scale, zp = act_qparams(self.scheme, lo, hi)
        self.scale.fill_(scale)
        self.zero_point.fill_(zp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            return x
        if self.mode == "calibrate":
            self.calibrator.observe(x)
            return x
        s = self.scheme
        if self._export is not None:
            q = _decomposed()
            scale, zp = self._export
            y = q.quantize_per_tensor(x, scale, zp, s.act_qmin, s.act_qmax, s.act_dtype)
            return q.dequantize_per_tensor(y, scale, zp, s.act_qmin, s.act_qmax, s.act_dtype)
        if self.ema and self.training:
            with torch.no_grad():
                m = self.ema_momentum
                lo = (1 - m) * self.lo + m * x.min()
                hi = (1 - m) * self.hi + m * x.max()
                self.set_range(float(lo), float(hi))
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, s.act_qmin,
                                                     s.act_qmax)

    def extra_repr(self) -> str:
        return (f"{self.scheme.act_dtype}, mode={self.mode}, scale={float(self.scale):.4g}, "
                f"zero_point={int(self.zero_point)}")


def weight_scales(w: torch.Tensor, per_channel: bool = True, qmax: int = WEIGHT_QMAX
                  ) -> torch.Tensor:
    """Symmetric scales, one per output channel: max |w| over each channel / ``qmax`` (127),
    or with ``per_channel=False`` the same per-tensor scale for every channel."""
    amax = w.detach().abs().flatten(1).amax(dim=1)
    if not per_channel:
        amax = amax.max().expand_as(amax)
    return (amax / qmax).clamp_min(1e-12)


class QuantLayer(nn.Module):
    """A conv or linear layer with its BatchNorm folded in and INT8 weights (per output
    channel, or with ``per_channel=False`` one scale for the whole tensor).

    The BatchNorm is kept as a module so QAT can keep updating its statistics
    (``bn_frozen = False``): the batch statistics come from a float pass, and the layer then
    always computes with the weights folded with the running statistics, the form it is
    exported in. ``bn_frozen = True`` (PTQ, and QAT after ``freeze_bn_after`` epochs) only
    uses the running statistics.
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm2d | None = None,
                 per_channel: bool = True, qmax: int = WEIGHT_QMAX):
        super().__init__()
        self.per_channel, self.qmax = per_channel, qmax
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"QuantLayer wraps Conv2d or Linear, not {type(layer).__name__}")
        self.layer = layer
        self.bn = bn
        self.bn_frozen = True
        self._export = False
        self._frozen_w: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        self._tensor_scale = 1.0

    def _compute(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None
                 ) -> torch.Tensor:
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, b)
        c = self.layer
        return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias with the BatchNorm (running statistics) folded in."""
        w, b = self.layer.weight, self.layer.bias
        bn = self.bn
        if bn is None:
            return w, b
        g = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        b0 = b if b is not None else torch.zeros_like(bn.running_mean)
        return w * g.reshape(-1, *([1] * (w.dim() - 1))), bn.bias + (b0 - bn.running_mean) * g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._export:
            q = _decomposed()
            w_int8, scales, b = self._frozen_w
            if self.per_channel:
                zeros = torch.zeros_like(scales, dtype=torch.int8)
                w = q.dequantize_per_channel(w_int8, scales, zeros, 0, -self.qmax,
                                             self.qmax, torch.int8)
            else:   # one scalar scale (a python constant): a per-tensor DequantizeLinear
                w = q.dequantize_per_tensor(w_int8, self._tensor_scale, 0, -self.qmax,
                                            self.qmax, torch.int8)
            return self._compute(x, w, b)
        if self.bn is not None and self.training and not self.bn_frozen:
            with torch.no_grad():  # update the running statistics from a float pass
                y = self._compute(x, self.layer.weight, self.layer.bias)
                bn = self.bn
                F.batch_norm(y, bn.running_mean, bn.running_var, None, None, True,
                             bn.momentum if bn.momentum is not None else 0.1, bn.eps)
        w, b = self.folded()
        scales = weight_scales(w, self.per_channel, self.qmax)
        wq = torch.fake_quantize_per_channel_affine(
            w, scales, torch.zeros_like(scales, dtype=torch.int32), 0, -self.qmax, self.qmax)
        return self._compute(x, wq, b)

    def freeze_for_export(self) -> None:
        """Compute the int8 weights, their scales and the folded bias as constants."""
        with torch.no_grad():
            w, b = self.folded()
            scales = weight_scales(w, self.per_channel, self.qmax)
            shape = (-1, *([1] * (w.dim() - 1)))
            w_int8 = torch.clamp(torch.round(w / scales.reshape(shape)), -self.qmax,
                                 self.qmax).to(torch.int8)
            self._frozen_w = (w_int8, scales.float(), None if b is None else b.detach().clone())
            self._tensor_scale = float(scales[0])


@contextlib.contextmanager
def qdq_export(model: nn.Module) -> Iterator[bool]:
    """Within this block the model's quant modules emit explicit Q/DQ ops (for export).

    Yields whether the model has any quant module at all.
    """
    quant = [m for m in model.modules() if isinstance(m, (ActQuant, QuantLayer))]
    if quant:
        _decomposed()  # before the exporter builds its op registry, or Q/DQ has no mapping
    for m in quant:
        if isinstance(m, QuantLayer):
            m.freeze_for_export()
            m._export = True
        elif m.mode == "quant":  # python constants: export traces buffers as fake tensors
            m._export = (float(m.scale), int(m.zero_point))
    try:
        yield bool(quant)
    finally:
        for m in quant:
            if isinstance(m, QuantLayer):
                m._export = False
                m._frozen_w = None
            else:
                m._export = None
