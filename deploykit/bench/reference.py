"""References for comparing latencies measured at different times, possibly on a busier or
slower machine: the regression gate's two ways not to mistake a slow machine for a slow model.

- :func:`retime_pair`: time the old and the new ONNX file again in this process, in adjacent
  pairs. Whatever slows the machine slows both calls of a pair alike, so the median of the
  pairs' ratios is the model's change.
- :func:`yardstick_ms`: a fixed workload (a small convolution stack with seeded weights, built
  in memory, run by ONNX Runtime on the CPU) timed beside every benchmark and stored in the
  report's environment. The ratio of two reports' yardsticks is how much slower one machine
  (or one moment) was than the other; stored latencies are scaled by it when the files are not
  there to re-time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.bench.latency import median_ci, time_alternating
from deploykit.runtimes import OrtRunner

__all__ = ["PairTiming", "retime_pair", "yardstick_ms"]


@dataclass(frozen=True)
class PairTiming:
    """An earlier and a current model timed in pairs: their p50s, and the median of the
    per-pair ratios (current / earlier) with its 95% interval half-width in percent."""

    old_ms: float
    new_ms: float
    ratio: float
    ratio_ci_pct: float
    pairs: int


def retime_pair(old: Path, new: Path, batch_sizes: list[int], threads: int = 2,
                budget_s: float = 10.0, min_pairs: int = 30, max_pairs: int = 1000,
                target_ci_pct: float = 2.0, clock: Callable[[], float] = time.perf_counter
                ) -> dict[int, PairTiming]:
    """Time ``old`` and ``new`` (ONNX files with one image input) on ONNX Runtime's CPU
    provider in adjacent pairs, alternating which goes first, per batch size.

    The ratio of each pair's two calls, a few milliseconds apart, cancels whatever slows the
    machine over longer spans (another process, a busy shared runner, frequency scaling), so
    the median ratio is the model's own change. Pairs are added until its 95% interval is
    within ``target_ci_pct`` (at least ``min_pairs``, at most ``max_pairs`` or ``budget_s``).
    """
    runners = [OrtRunner(old, threads=threads), OrtRunner(new, threads=threads)]
    dims = runners[1].session.get_inputs()[0].shape[1:]
    shape = tuple(d if isinstance(d, int) else 1 for d in dims)
    rng = np.random.default_rng(0)
    out = {}
    for b in batch_sizes:
        x = rng.standard_normal((b, *shape), dtype=np.float32)
        for r in runners * 3:   # warm-up
            r(x)
        times: list[list[float]] = [[], []]
        start = clock()
        while True:
            n = len(times[0])
            for k in ((0, 1) if n % 2 == 0 else (1, 0)):
                t0 = clock()
                runners[k](x)
                times[k].append(clock() - t0)
            if n + 1 < min_pairs or (n + 1) % 10:
                continue
            ratios = np.asarray(times[1]) / np.asarray(times[0])
            lo, hi = median_ci(ratios)
            med = float(np.median(ratios))
            ci_pct = 100.0 * (hi - lo) / 2 / med
            if ci_pct <= target_ci_pct or n + 1 >= max_pairs or clock() - start >= budget_s:
                break
        out[b] = PairTiming(1e3 * float(np.median(times[0])), 1e3 * float(np.median(times[1])),
                            med, ci_pct, len(times[0]))
    return out


def _yardstick_model() -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1234)
    nodes, inits, prev = [], [], "x"
    for i in range(4):
        w = (rng.standard_normal((32, 32, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev = f"r{i}"
    graph = helper.make_graph(
        nodes, "deploykit-yardstick",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 32, 32])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 32, 32, 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def yardstick_ms(threads: int = 2, iterations: int = 40) -> float:
    """p50 milliseconds of the fixed workload on this machine, now."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "yardstick.onnx"
        path.write_bytes(_yardstick_model())
        runner = OrtRunner(path, threads=threads)
        x = np.random.default_rng(0).standard_normal((1, 32, 32, 32), dtype=np.float32)
        stats = time_alternating({"yardstick": lambda: runner(x)}, 1, iterations=iterations,
                                 warmup=5, rounds=1)
    return stats["yardstick"].p50_ms
