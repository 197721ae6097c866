"""Latency yardsticks: models against one reference model, or ONNX files against each other,
timed alternately on a runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from deploykit.bench.latency import time_alternating
from deploykit.export import export_onnx
from deploykit.recipe import runtime_info
from deploykit.runtimes import Runner, make_runner

__all__ = ["LatencyProbe", "time_onnx_files"]


class LatencyProbe:
    """Measures ``model``'s latency over ``reference``'s on ``runtime`` at ``batch``.

    The reference is exported and loaded once; each measured model is exported to
    ``workdir`` (ONNX runtimes) and timed alternately with the reference, so a machine that is
    slower for a while slows both.

    Example:
        >>> probe = LatencyProbe(base, (3, 32, 32), "onnxruntime-cpu", 1, 2, tmp)  # doctest: +SKIP
        >>> probe.ratio(pruned)  # doctest: +SKIP
        0.62
    """

    def __init__(self, reference: nn.Module, shape: tuple[int, int, int], runtime: str,
                 batch: int, threads: int, workdir: Path, iterations: int = 40,
                 warmup: int = 5) -> None:
        self.shape, self.runtime, self.batch, self.threads = shape, runtime, batch, threads
        self.workdir, self.iterations, self.warmup = workdir, iterations, warmup
        self.x = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
        self.reference = self._runner(reference, "reference")

    def _runner(self, model: nn.Module, name: str) -> Runner:
        path = None
        if runtime_info(self.runtime).runs == "onnx":
            path = export_onnx(model, self.shape, self.workdir / f"{name}.onnx")
        return make_runner(self.runtime, model, path, self.threads)

    def ratio(self, model: nn.Module) -> float:
        """Median latency of ``model`` over the reference's (below 1: faster)."""
        runners = {"reference": self.reference, "model": self._runner(model, "model")}
        stats = time_alternating({k: (lambda r=r: r(self.x)) for k, r in runners.items()},
                                 self.batch, iterations=self.iterations, warmup=self.warmup)
        return stats["model"].p50_ms / stats["reference"].p50_ms


def time_onnx_files(paths: dict[str, Path], shape: tuple[int, int, int],
                    batch_sizes: list[int], threads: int = 2, iterations: int = 30,
                    warmup: int = 5, rounds: int = 5, runtime: str = "onnxruntime-cpu"
                    ) -> dict[str, dict[int, float]]:
    """p50 milliseconds of each ONNX file at each batch size on ``runtime`` (a runtime that
    runs ONNX files: ONNX Runtime's CPU EP by default, ``openvino-cpu``, ...), the files timed
    alternately in this process (ratios between them are fair)."""
    runners: dict[str, Runner] = {name: make_runner(runtime, onnx_path=p, threads=threads)
                                  for name, p in paths.items()}
    out: dict[str, dict[int, float]] = {name: {} for name in paths}
    rng = np.random.default_rng(0)
    for b in batch_sizes:
        x = rng.standard_normal((b, *shape), dtype=np.float32)
        stats = time_alternating({k: (lambda r=r, x=x: r(x)) for k, r in runners.items()}, b,
                                 iterations=iterations, warmup=warmup, rounds=rounds)
        for name, st in stats.items():
            out[name][b] = st.p50_ms
    return out
