"""Make the INT8 (fake-quant, calibrated) or FP16 twin of a float model for a quantize recipe."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from deploykit.quant.prepare import QuantizedModel, prepare
from deploykit.quant.scheme import SCHEMES, QuantScheme
from deploykit.recipe import QuantizeSpec

__all__ = ["Fp16Model", "build_quantized"]


def build_quantized(model: nn.Module, spec: QuantizeSpec, keep: Sequence[str],
                    calib: Sequence[torch.Tensor], scheme: QuantScheme | None = None
                    ) -> QuantizedModel:
    """Prepare the fake-quant model for ``spec.target`` (or ``scheme``) and calibrate it on
    ``calib``."""
    c = spec.calibration
    qm = prepare(model, scheme or SCHEMES[spec.target], keep, c.method, c.bins, c.percentile)
    qm.calibrate(calib)
    return qm


class Fp16Model(nn.Module):
    """FP16 weights and activations with float32 inputs and outputs (for GPU targets)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(model).half().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.half()).float()
