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

__all__ = ["cpu_int8_features", "cpuinfo", "u8s8_saturates"]

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
