"""Whether a runtime can run here, checked when a recipe is loaded for a run, before any
training: the package importable, a GPU visible, the execution provider (ONNX Runtime) or the
device (OpenVINO) present."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.errors import BackendUnavailableError
from deploykit.recipe import runtime_info
from deploykit.runtimes.cuda import require_cuda

if TYPE_CHECKING:
    from deploykit.recipe import Recipe

__all__ = ["check_available", "check_runtimes"]


def check_available(runtime: str, device_index: int = 0) -> None:
    """Raise now if ``runtime`` cannot run on this machine: what its row of the runtime table
    needs (the package, ONNX Runtime's execution provider, a CUDA GPU) is checked.

    Raises:
        BackendUnavailableError: naming the runtime, what is missing and what to install or
            change (drop it from ``bench.runtimes``).
    """
    try:
        info = runtime_info(runtime)
    except KeyError as e:
        raise BackendUnavailableError(str(e.args[0])) from None
    if info.provider is not None:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if info.provider not in have:
            raise BackendUnavailableError(
                f"runtime {runtime} needs ONNX Runtime's {info.provider}, which this "
                f"machine does not have (available: {', '.join(have)}). Install "
                f"{info.install} or remove it from bench.runtimes")
    if info.device == "cuda":
        require_cuda(f"runtime {runtime}", device_index)
    if info.needs == "openvino":
        from deploykit.runtimes.openvino import require_openvino_device

        require_openvino_device(info.ov_device or "CPU", f"runtime {runtime}")
    if info.needs == "tensorrt":
        from deploykit.runtimes.tensorrt import import_tensorrt

        import_tensorrt()


def check_runtimes(recipe: Recipe, source: str = "recipe") -> None:
    """Check every runtime ``recipe`` names (``bench.runtimes``, on ``bench.gpu.device``), and
    the one each quantize stage's speed check times INT8 on (its ``target``'s).

    Raises:
        BackendUnavailableError: ``<source>: bench.runtimes[i]: <what is missing and the fix>``
            (or ``stages[i].target``).
    """
    for i, runtime in enumerate(recipe.bench.runtimes):
        try:
            check_available(runtime, recipe.bench.gpu.device)
        except BackendUnavailableError as e:
            raise BackendUnavailableError(f"{source}: bench.runtimes[{i}]: {e}") from None
    for i, stage in enumerate(recipe.stages):
        runtime = getattr(stage, "speed_runtime", None)
        if runtime is None or getattr(stage, "speed_check", None) is None or \
                runtime in recipe.bench.runtimes:
            continue
        try:
            check_available(runtime)
        except BackendUnavailableError as e:
            raise BackendUnavailableError(
                f"{source}: stages[{i}].target: {stage.target} times INT8 against its float "
                f"twin on {runtime}: {e}; or set speed_check: null") from None
