"""A CPU latency row against the CPU's peak: threads x clock x MACs per cycle of the
instruction set, per precision, with the derivation stated."""

from __future__ import annotations

import pytest

from deploykit.bench import CpuRows, LatencyStats
from deploykit.host.cpu import cpu_peak
from deploykit.report.model import LatencyRecord


def _lines(vendor: str, flags: str, mhz: str | None = "2500.000", bogomips: str = "4890.84"
           ) -> list[str]:
    lines = [f"vendor_id\t: {vendor}\n", f"model name\t: {vendor} CPU\n",
             f"flags\t\t: fpu sse sse2 {flags}\n", f"bogomips\t: {bogomips}\n"]
    return lines + ([f"cpu MHz\t\t: {mhz}\n"] if mhz else [])


@pytest.mark.parametrize(("vendor", "flags", "fp32", "int8"), [
    ("AuthenticAMD", "avx avx2 fma", 16, 32),                          # Zen 2/3
    ("AuthenticAMD", "avx avx2 fma avx512f avx512bw avx512_vnni", 16, 64),   # Zen 4
    ("GenuineIntel", "avx avx2 fma avx512f avx512bw avx512_vnni", 32, 128),  # Cascade Lake+
    ("GenuineIntel", "avx avx2 fma avx512f avx512bw avx512_vnni amx_int8", 32, 1024),
    ("GenuineIntel", "avx avx2 fma avx_vnni", 16, 64),                 # Alder Lake
])
def test_the_peak_is_threads_times_clock_times_macs_per_cycle(vendor, flags, fp32, int8):
    peak = cpu_peak(2, _lines(vendor, flags))
    assert peak.gmacs["fp32"] == pytest.approx(2 * 2.5 * fp32)
    assert peak.gmacs["int8"] == pytest.approx(2 * 2.5 * int8)
    assert peak.basis["int8"].startswith(f"2 cores x 2.50 GHz (cpu MHz) x {int8} int8")


def test_without_cpu_mhz_the_tsc_clock_is_used_and_said_so():
    peak = cpu_peak(1, _lines("AuthenticAMD", "avx avx2 fma", mhz=None))
    assert peak.gmacs["fp32"] == pytest.approx(2.44542 * 16)
    assert "TSC, base clock" in peak.basis["fp32"]
    assert cpu_peak(1, ["model name\t: x\n"]) is None   # no flags, no clock: no peak


def test_a_cpu_row_gets_its_rate_and_fraction_of_the_peak_for_its_precision():
    stats = LatencyStats(batch=64, iterations=10, p50_ms=32.0, p90_ms=33.0, p99_ms=34.0,
                         mean_ms=32.0, std_ms=0.5, min_ms=31.0, max_ms=35.0, throughput_ips=2000)
    rows = CpuRows()
    fp = LatencyRecord.from_stats(stats, runtime="onnxruntime", device="cpu", precision="fp32",
                                  threads=2)
    q = LatencyRecord.from_stats(stats, runtime="onnxruntime", device="cpu", precision="int8",
                                 threads=2)
    rows.fill(fp, 40_000_000)
    rows.fill(q, 40_000_000)
    assert fp.gmacs_per_s == pytest.approx(40e6 * 64 / 0.032 / 1e9)   # 80 GMAC/s
    peak = cpu_peak(2)
    if peak is None:
        pytest.skip("this machine reports no CPU clock or flags")
    assert fp.peak_fraction == pytest.approx(fp.gmacs_per_s / peak.gmacs["fp32"])
    assert q.peak_fraction == pytest.approx(q.gmacs_per_s / peak.gmacs["int8"])
    assert q.peak_basis == peak.basis["int8"]
