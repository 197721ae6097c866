"""Whether a runtime can run here, checked when a recipe is loaded for a run, before any
training: the package importable, a GPU visible, the execution provider present."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.errors import BackendUnavailableError
from deploykit.recipe import RUNTIMES
from deploykit.runtimes.cuda import require_cuda
from deploykit.runtimes.ort import ORT_PROVIDERS

if TYPE_CHECKING:
    from deploykit.recipe import Recipe

__all__ = ["check_available", "check_runtimes"]


def check_available(runtime: str, device_index: int = 0) -> None:
    """Raise now if ``runtime`` cannot run on this machine.

    Raises:
        BackendUnavailableError: naming the runtime, what is missing and what to install or
            change (drop it from ``bench.runtimes``).
    """
    if runtime in ("torch-cuda", "tensorrt"):
        require_cuda(f"runtime {runtime}", device_index)
        if runtime == "tensorrt":
            from deploykit.runtimes.tensorrt import import_tensorrt

            import_tensorrt()
    elif runtime in ORT_PROVIDERS:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if ORT_PROVIDERS[runtime] not in have:
            raise BackendUnavailableError(
                f"runtime {runtime} needs ONNX Runtime's {ORT_PROVIDERS[runtime]}, which this "
                f"machine does not have (available: {', '.join(have)}). Install "
                'onnxruntime-gpu on a CUDA machine (pip install "deploykit[gpu]") or remove '
                "it from bench.runtimes")
        if runtime != "onnxruntime-cpu":
            require_cuda(f"runtime {runtime}", device_index)
    elif runtime != "torch-cpu":
        raise BackendUnavailableError(f"unknown runtime {runtime!r}; available: "
                                      f"{', '.join(RUNTIMES)}")


def check_runtimes(recipe: Recipe, source: str = "recipe") -> None:
    """Check every runtime ``recipe`` names (``bench.runtimes``, on ``bench.gpu.device``).

    Raises:
        BackendUnavailableError: ``<source>: bench.runtimes[i]: <what is missing and the fix>``.
    """
    for i, runtime in enumerate(recipe.bench.runtimes):
        try:
            check_available(runtime, recipe.bench.gpu.device)
        except BackendUnavailableError as e:
            raise BackendUnavailableError(f"{source}: bench.runtimes[{i}]: {e}") from None
