"""Time one ONNX file on one or more runtimes: the ``deploykit bench`` command."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.bench.env import environment
from deploykit.bench.latency import time_alternating
from deploykit.errors import DeployKitError
from deploykit.host.progress import Table
from deploykit.runfiles.atomic import write_text
from deploykit.runtimes import OrtRunner, make_runner

__all__ = ["FileBench", "bench_onnx_file"]


@dataclass
class FileBench:
    """The timings of one file: one result per runtime and batch size, and the machine."""

    model: Path
    threads: int
    environment: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"model": str(self.model), "environment": self.environment,
                           "results": self.results}, indent=2) + "\n"

    def table(self) -> Table:
        rows = [(f"{r['runtime']}-{r['device']}", r["precision"], r.get("setup") or "-",
                 str(r["batch"]),
                 f"{r['p50_ms']:.3f}", f"{r['p50_ci_low_ms']:.3f}-{r['p50_ci_high_ms']:.3f}",
                 f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}",
                 f"{r['mean_ms']:.3f} ± {r['std_ms']:.3f}", f"{r['throughput_ips']:.0f}",
                 str(r["iterations"]), r["stop_reason"]) for r in self.results]
        return Table(f"{self.model.name}: {self.threads} CPU threads",
                     ("runtime", "precision", "set-up", "batch", "p50 ms", "p50 95% CI", "p90 ms",
                      "p99 ms", "mean ± std ms", "images/s", "runs", "stopped by"), rows)


def _image_shape(path: Path, threads: int) -> list[int]:
    dims = OrtRunner(path, threads=threads).session.get_inputs()[0].shape[1:]
    shape = [d if isinstance(d, int) and d > 0 else None for d in dims]
    if any(d is None for d in shape):
        raise DeployKitError(f"{path}: input has symbolic non-batch dimensions {shape}; "
                             "re-export with a fixed image size")
    return shape  # type: ignore[return-value]  (no None left)


def bench_onnx_file(path: str | Path, runtimes: list[str], batch_sizes: list[int],
                    threads: int = 2, precision: str = "fp32", *, iterations: int = 50,
                    warmup: int = 10, target_rel_ci: float | None = 0.02,
                    max_iterations: int = 1000, budget_s: float = 30.0,
                    json_path: str | Path | None = None) -> FileBench:
    """Warm up, then time ``path`` on each runtime at each batch size until the median's 95%
    interval is within ``target_rel_ci`` (or ``max_iterations``, or ``budget_s``).

    Args:
        path: an ONNX file with a fixed image size.
        runtimes: ONNX-consuming runtimes (``onnxruntime-cpu``, ``tensorrt``, ...).
        precision: what the file computes in (a label; TensorRT reads it from the file).
        json_path: also write the results, with the environment, here.

    Raises:
        DeployKitError: the file is missing, has a symbolic image size, or a runtime is
            unavailable.
    """
    path = Path(path)
    if not path.is_file():
        raise DeployKitError(f"{path}: file not found (an ONNX model, or a recipe YAML)")
    shape = _image_shape(path, threads)
    out = FileBench(path, threads, environment(threads))
    rng = np.random.default_rng(0)
    for rt in runtimes:
        runner = make_runner(rt, onnx_path=path, threads=threads, precision=precision,
                             max_batch=max(batch_sizes))
        for b in batch_sizes:
            x = rng.standard_normal((b, *shape), dtype=np.float32)
            st = time_alternating({"model": lambda x=x, r=runner: r(x)}, b, iterations, warmup,
                                  target_rel_ci=target_rel_ci, max_iterations=max_iterations,
                                  budget_s=budget_s)
            out.results.append({"runtime": runner.runtime, "device": runner.device,
                                "precision": runner.precision, "threads": threads,
                                "setup": getattr(runner, "setup", None), **st["model"].to_dict()})
    if json_path is not None:
        write_text(json_path, out.to_json())
    return out
