"""CPU latency rows against what the CPU can do: the achieved multiply-accumulates per second
and their fraction of the CPU's peak for the row's precision (threads x clock x MACs per cycle
of its instruction set, :func:`deploykit.host.cpu.cpu_peak`)."""

from __future__ import annotations

from typing import Any

from deploykit.host.cpu import CpuPeak, cpu_peak

__all__ = ["CpuRows"]

class CpuRows:
    """Fills CPU latency rows; the peak is derived once per thread count."""

    def __init__(self) -> None:
        self._peaks: dict[int, CpuPeak | None] = {}

    def fill(self, rec: Any, macs: int) -> None:
        """Set ``rec.gmacs_per_s`` and, where the CPU's peak for its precision is known,
        ``rec.peak_fraction`` and ``rec.peak_basis``."""
        if rec.p50_ms <= 0 or macs <= 0:
            return
        rec.gmacs_per_s = macs * rec.batch / (rec.p50_ms * 1e-3) / 1e9
        if rec.threads not in self._peaks:
            self._peaks[rec.threads] = cpu_peak(rec.threads)
        peak = self._peaks[rec.threads]
        # INT8 rows are held to the integer units' peak, fp32 ones to the FMA units'
        if peak is None or rec.precision not in peak.gmacs:
            return
        rec.peak_fraction = rec.gmacs_per_s / peak.gmacs[rec.precision]
        rec.peak_basis = peak.basis[rec.precision]
