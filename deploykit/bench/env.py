"""Environment fingerprint stored with every result."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

__all__ = ["cpu_int8_features", "environment"]

_PACKAGES = ("torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnxruntime-gpu",
             "onnxscript", "numpy", "tensorrt", "tensorly", "deploykit")


# CPU features that decide how fast INT8 runs: ONNX Runtime's integer kernels use VNNI or AMX
# where present. The same INT8 model measured 1.31x over float on an AVX2 AMD EPYC and 1.74x
# on an AVX-512 VNNI Intel Xeon (R20, batch 64), so results must say which one ran them.
_INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.readlines()
    except OSError:
        return []


def _cpu_model(lines: list[str]) -> str:
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_int8_features(lines: list[str]) -> list[str]:
    """Which of the INT8-relevant instruction-set features the first CPU's flags list."""
    for line in lines:
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in _INT8_ISA if f in flags]
    return []


def environment(threads: int | None = None) -> dict[str, Any]:
    """CPU model, core count, GPU (if any), OS, Python and library versions."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    lines = _cpuinfo()
    env: dict[str, Any] = {
        "cpu_model": _cpu_model(lines),
        "cpu_int8_features": cpu_int8_features(lines),
        "cpu_cores": os.cpu_count(),
        "threads": threads,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
        "gpu": None,
    }
    import torch

    from deploykit.runtimes.cuda import cuda_api

    api = cuda_api()
    if api.is_available():
        env["gpu"] = api.device_name(0)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["driver"] = _driver_version()
    return env


def _driver_version() -> str | None:
    """The NVIDIA driver version from nvidia-smi, if it is on PATH."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
