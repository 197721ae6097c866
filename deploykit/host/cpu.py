"""What this machine's CPU offers for INT8: the instruction-set features that decide how fast
integer kernels run, and whether ONNX Runtime's uint8 x int8 kernels can saturate on it.

On x86 CPUs without VNNI (AVX2 or AVX-512 alone), ONNX Runtime's u8s8 matrix kernels multiply
pairs of uint8 activations and int8 weights with ``vpmaddubsw``, which adds each pair into a
signed 16-bit lane and saturates: 255 x 127 x 2 = 64770 does not fit. ONNX Runtime's
quantization guide recommends weights of 7 bits ("reduce range") on those machines, so that a
pair can never overflow; VNNI (``vpdpbusd``) and ARM's dot products accumulate in 32 bits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = ["CpuPeak", "cpu_int8_features", "cpu_peak", "cpuinfo", "u8s8_saturates"]

# CPU features that decide how fast INT8 runs: ONNX Runtime's integer kernels use VNNI or AMX
# where present. The same INT8 model measured 1.31x over float on an AVX2 AMD EPYC and 1.74x
# on an AVX-512 VNNI Intel Xeon (R20, batch 64), so results must say which one ran them.
_INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpuinfo() -> list[str]:
    """The lines of ``/proc/cpuinfo`` (none where there is no such file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.readlines()
    except OSError:
        return []


def cpu_int8_features(lines: list[str]) -> list[str]:
    """Which of the INT8-relevant instruction-set features the first CPU's flags list."""
    for line in lines:
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in _INT8_ISA if f in flags]
    return []


def u8s8_saturates(features: list[str] | None = None) -> bool:
    """Whether uint8 x int8 products can saturate in ONNX Runtime's CPU kernels here: an x86
    CPU with AVX2 but no VNNI (``features``: :func:`cpu_int8_features`' list, default this
    machine's)."""
    have = set(_machine_features() if features is None else features)
    return "avx2" in have and not have & set(_VNNI)


@functools.cache
def _machine_features() -> tuple[str, ...]:
    return tuple(cpu_int8_features(cpuinfo()))


@dataclass(frozen=True)
class CpuPeak:
    """What ``threads`` cores of this CPU can do at most, in multiply-accumulates per second,
    and how that was derived: per precision (``fp32``, ``int8``) the GMAC/s and its basis
    (e.g. ``2 cores x 2.45 GHz (TSC) x 16 fp32 MAC/cycle (AVX2 + FMA: 2 x 8 lanes)``)."""

    gmacs: dict[str, float]
    basis: dict[str, str]


def _field(lines: list[str], key: str) -> str | None:
    for line in lines:
        if line.split(":", 1)[0].strip() == key:
            return line.split(":", 1)[1].strip()
    return None


def _clock_ghz(lines: list[str]) -> tuple[float, str] | None:
    """The clock: ``cpu MHz`` where the kernel reports it, else the TSC frequency (half the
    ``bogomips``: the base clock on x86; boost clocks run higher, so a fraction of this peak
    can pass 100%)."""
    mhz = _field(lines, "cpu MHz")
    if mhz:
        return float(mhz) / 1e3, "cpu MHz"
    bogo = _field(lines, "bogomips")
    if bogo:
        return float(bogo) / 2e3, "TSC, base clock"
    return None


def _macs_per_cycle(flags: set[str], amd: bool) -> dict[str, tuple[int, str]]:
    """Per core and cycle, the fp32 and int8 multiply-accumulates the widest vector units can
    issue: two FMA (or integer multiply) pipes per core, AMD's AVX-512 (Zen 4) at half rate
    (two 256-bit halves), int8 without VNNI as ``vpmaddubsw`` + ``vpmaddwd`` (two
    instructions per 4 products a lane), with VNNI as one ``vpdpbusd``, AMX as 1024."""
    if "avx512f" in flags and not amd:
        fp32 = (32, "AVX-512: 2 FMA x 16 lanes")
    elif "avx512f" in flags or {"avx2", "fma"} <= flags:
        fp32 = (16, "AVX-512 on 256-bit pipes: 2 FMA x 8 lanes" if "avx512f" in flags
                else "AVX2 + FMA: 2 FMA x 8 lanes")
    elif "avx" in flags:
        fp32 = (8, "AVX without FMA: 1 mul + 1 add x 8 lanes")
    else:
        fp32 = (4, "SSE: 1 mul + 1 add x 4 lanes")
    if "amx_int8" in flags:
        int8 = (1024, "AMX: 1024 int8 MAC")
    elif "avx512_vnni" in flags:
        int8 = ((64, "AVX-512 VNNI on 256-bit pipes: 2 x 32 (vpdpbusd)") if amd else
                (128, "AVX-512 VNNI: 2 x 64 (vpdpbusd)"))
    elif "avx_vnni" in flags:
        int8 = (64, "AVX-VNNI: 2 x 32 (vpdpbusd)")
    elif "avx512f" in flags and "avx512bw" in flags:
        int8 = (32 if amd else 64, "AVX-512BW without VNNI: vpmaddubsw + vpmaddwd")
    elif "avx2" in flags:
        int8 = (32, "AVX2 without VNNI: vpmaddubsw + vpmaddwd, 2 pipes x 16")
    else:
        int8 = fp32
    return {"fp32": fp32, "int8": int8}


def cpu_peak(threads: int, lines: list[str] | None = None) -> CpuPeak | None:
    """The peak of ``threads`` cores of the CPU ``lines`` (``/proc/cpuinfo``; default this
    machine's) describe; ``None`` where its clock or flags are not reported."""
    lines = cpuinfo() if lines is None else lines
    flags_line = _field(lines, "flags")
    clock = _clock_ghz(lines)
    if flags_line is None or clock is None:
        return None
    ghz, source = clock
    amd = "AMD" in (_field(lines, "vendor_id") or "") + (_field(lines, "model name") or "")
    gmacs, basis = {}, {}
    for precision, (per_cycle, how) in _macs_per_cycle(set(flags_line.split()), amd).items():
        gmacs[precision] = threads * ghz * per_cycle
        basis[precision] = (f"{threads} cores x {ghz:.2f} GHz ({source}) x {per_cycle} "
                            f"{precision} MAC/cycle ({how})")
    return CpuPeak(gmacs, basis)
