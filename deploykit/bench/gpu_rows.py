"""What a GPU latency row adds to the timing: the arithmetic rate reached (TFLOP/s, counting a
multiply-accumulate as two operations) and its fraction of the GPU's dense FP16 peak."""

from __future__ import annotations

from typing import Any

from deploykit.host.progress import log
from deploykit.runtimes.cuda import cuda_api, measure_matmul_tflops, peak_fp16_tflops

__all__ = ["GpuPeak", "tflops"]


def tflops(macs: int, batch: int, ms: float) -> float:
    """TFLOP/s of ``batch`` images of ``macs`` multiply-accumulates each in ``ms``."""
    return 2.0 * macs * batch / (ms / 1e3) / 1e12 if ms > 0 else 0.0


class GpuPeak:
    """The dense FP16 peak of GPU ``index``, found once on first use (a table by the name
    CUDA reports, else a large FP16 matmul), and the rows it fills."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._peak: tuple[float, str] | None = None

    def peak(self) -> tuple[float, str]:
        if self._peak is None:
            name = cuda_api().device_name(self.index)
            self._peak = peak_fp16_tflops(name, lambda: measure_matmul_tflops(self.index))
            log(f"GPU {self.index} ({name}): dense FP16 peak {self._peak[0]:.0f} TFLOP/s "
                f"({self._peak[1]})")
        return self._peak

    def fill(self, rec: Any, macs: int) -> None:
        """Set ``rec.tflops`` (from the device time when measured, else end to end) and
        ``rec.peak_fraction``."""
        ms = rec.device_p50_ms if rec.device_p50_ms is not None else rec.p50_ms
        rec.tflops = tflops(macs, rec.batch, ms)
        rec.peak_fraction = rec.tflops / self.peak()[0]
