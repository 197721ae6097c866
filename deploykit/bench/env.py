"""Environment fingerprint stored with every result."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from deploykit.host.cpu import cpu_int8_features, cpuinfo

__all__ = ["cpu_int8_features", "environment"]

_PACKAGES = ("torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnxruntime-gpu",
             "onnxscript", "numpy", "tensorrt", "tensorly", "deploykit")


def _cpu_model(lines: list[str]) -> str:
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(threads: int | None = None) -> dict[str, Any]:
    """CPU model, core count, GPU (if any), OS, Python and library versions."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    lines = cpuinfo()
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
