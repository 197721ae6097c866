"""Activation range calibrators, each over a library's observer or collector.

``minmax`` and ``mse`` use PyTorch's observers (``MinMaxObserver``; ``HistogramObserver``, whose
range search minimises the L2 quantization error). ``percentile`` and ``entropy`` use ONNX
Runtime's ``HistogramCollector`` (the code behind its static-quantization calibrators), fed
with the activations PyTorch computes. All keep running extremes or a fixed-size histogram.
"""

from __future__ import annotations

import contextlib
import io
from typing import Protocol

import torch

from deploykit.quant.scheme import QuantScheme

__all__ = ["Calibrator", "make_calibrator"]


class Calibrator(Protocol):
    def observe(self, x: torch.Tensor) -> None: ...

    def range(self) -> tuple[float, float]: ...


class _TorchObserver:
    def __init__(self, observer: torch.nn.Module, scheme: QuantScheme, from_qparams: bool):
        self.obs = observer
        self.scheme = scheme
        self.from_qparams = from_qparams
        self.seen = False

    def observe(self, x: torch.Tensor) -> None:
        self.obs(x.detach().float())
        self.seen = True

    def range(self) -> tuple[float, float]:
        if not self.seen:
            raise RuntimeError("calibrator saw no data")
        if not self.from_qparams:
            return float(self.obs.min_val), float(self.obs.max_val)
        scale, zp = (float(v) for v in self.obs.calculate_qparams())
        qmin, qmax = self.obs.quant_min, self.obs.quant_max
        return (qmin - zp) * scale, (qmax - zp) * scale


class _OrtHistogram:
    def __init__(self, method: str, symmetric: bool, bins: int, percentile: float):
        from onnxruntime.quantization.calibrate import HistogramCollector

        self.collector = HistogramCollector(method=method, symmetric=symmetric, num_bins=bins,
                                            num_quantized_bins=128, percentile=percentile,
                                            scenario="same")
        self.seen = False

    def observe(self, x: torch.Tensor) -> None:
        arr = x.detach().float().cpu().numpy().ravel()
        with contextlib.redirect_stdout(io.StringIO()):
            self.collector.collect({"t": arr})
        self.seen = True

    def range(self) -> tuple[float, float]:
        if not self.seen:
            raise RuntimeError("calibrator saw no data")
        with contextlib.redirect_stdout(io.StringIO()):
            lo, hi = self.collector.compute_collection_result()["t"][:2]
        return float(lo), float(hi)


def make_calibrator(method: str, scheme: QuantScheme, bins: int = 2048,
                    percentile: float = 99.99) -> Calibrator:
    """A fresh calibrator of kind ``method`` for one activation tensor."""
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

    if method == "minmax":
        return _TorchObserver(MinMaxObserver(), scheme, from_qparams=False)
    if method == "mse":
        dtype = torch.qint8 if scheme.act_symmetric else torch.quint8
        qscheme = torch.per_tensor_symmetric if scheme.act_symmetric else torch.per_tensor_affine
        return _TorchObserver(HistogramObserver(bins=bins, dtype=dtype, qscheme=qscheme),
                              scheme, from_qparams=True)
    if method in ("percentile", "entropy"):
        return _OrtHistogram(method, scheme.act_symmetric, bins if method == "percentile"
                             else 128 * 4, percentile)
    raise ValueError(f"unknown calibration method {method!r}")
