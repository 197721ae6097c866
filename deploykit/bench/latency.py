"""Latency: warm-up, repeated timing, percentiles; candidates timed alternately in one process."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = ["LatencyStats", "device_p50_ms", "median_ci", "summarize", "time_alternating"]


@dataclass
class LatencyStats:
    """Per-batch latency in milliseconds and throughput in images per second."""

    batch: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput_ips: float
    p50_ci_low_ms: float | None = None
    p50_ci_high_ms: float | None = None
    stop_reason: str | None = None   # "ci" | "budget" | "max_iterations" | "fixed"

    @property
    def ci_rel_halfwidth(self) -> float | None:
        """Half the width of the median's 95% interval, relative to the median."""
        if self.p50_ci_low_ms is None or self.p50_ci_high_ms is None or self.p50_ms <= 0:
            return None
        return (self.p50_ci_high_ms - self.p50_ci_low_ms) / 2 / self.p50_ms

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(times_s: Sequence[float], batch: int) -> LatencyStats:
    """Statistics of per-call wall times (seconds) for batches of ``batch`` images.

    Percentiles use linear interpolation (numpy's default). Throughput is ``batch / median``.
    ``p50_ci_*`` is a 95% bootstrap interval of the median (seeded, so reproducible): the
    measurement noise that regression gates compare a change against.

    Raises:
        ValueError: no timings.
    """
    if len(times_s) == 0:
        raise ValueError("no timings to summarise")
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    ci_low, ci_high = median_ci(ms)
    return LatencyStats(batch=batch, iterations=len(ms), p50_ms=float(p50), p90_ms=float(p90),
                        p99_ms=float(p99), mean_ms=float(ms.mean()),
                        std_ms=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
                        min_ms=float(ms.min()), max_ms=float(ms.max()),
                        throughput_ips=float(batch / (p50 / 1e3)) if p50 > 0 else float("inf"),
                        p50_ci_low_ms=ci_low, p50_ci_high_ms=ci_high)


def median_ci(values: np.ndarray, level: float = 0.95, resamples: int = 2000,
              seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median of ``values``."""
    if len(values) < 2:
        v = float(values[0])
        return v, v
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    medians = np.median(values[idx], axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(medians, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def time_alternating(fns: dict[str, Callable[[], object]], batch: int, iterations: int = 50,
                     warmup: int = 10, rounds: int = 5,
                     clock: Callable[[], float] = time.perf_counter,
                     target_rel_ci: float | None = None, max_iterations: int | None = None,
                     budget_s: float | None = None) -> dict[str, LatencyStats]:
    """Time several callables fairly: warm each up, then interleave them in ``rounds`` rounds.

    Interleaving spreads slow drifts (thermal, other processes) over every candidate instead of
    penalising whichever ran last, so ratios between candidates are trustworthy.

    Args:
        fns: name -> zero-argument callable running one batch.
        batch: images per call (for throughput).
        iterations: timed calls per callable in total (split across rounds).
        warmup: untimed calls per callable first.
        rounds: how many times the candidates alternate.
        target_rel_ci: the stopping rule: after ``iterations``, keep adding rounds until the
            95% interval of every callable's median is within +-``target_rel_ci`` of it
            (e.g. 0.02), ``max_iterations`` per callable are reached, or ``budget_s`` seconds
            of timing have passed. ``None``: exactly ``iterations``.
        clock: the time source (tests pass a synthetic one).

    Returns:
        name -> :class:`LatencyStats`, with ``stop_reason`` saying which rule ended it.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    rounds = max(1, min(rounds, iterations))
    base, extra = divmod(iterations, rounds)
    per_round = [base + (1 if r < extra else 0) for r in range(rounds)]
    start = clock()

    def one_round(n: int) -> None:
        for name, fn in fns.items():
            for _ in range(n):
                t0 = clock()
                fn()
                times[name].append(clock() - t0)

    for n in per_round:
        one_round(n)
    reason = "fixed"
    if target_rel_ci is not None:
        cap = max_iterations if max_iterations is not None else 20 * iterations
        step = max(per_round[0], 1)
        while True:
            stats = {name: summarize(t, batch) for name, t in times.items()}
            if all((st.ci_rel_halfwidth or 0.0) <= target_rel_ci for st in stats.values()):
                reason = "ci"
                break
            if min(len(t) for t in times.values()) >= cap:
                reason = "max_iterations"
                break
            if budget_s is not None and clock() - start >= budget_s:
                reason = "budget"
                break
            one_round(min(step, cap - min(len(t) for t in times.values())))
    return {name: replace(summarize(t, batch), stop_reason=reason) for name, t in times.items()}


def device_p50_ms(runner: object, x: np.ndarray, iterations: int, warmup: int) -> float | None:
    """The median device-only time of a GPU runner (CUDA events, input already on the device),
    reported beside the end-to-end figure; ``None`` for CPU runners and runners without
    ``device_ms``."""
    device_ms = getattr(runner, "device_ms", None)
    if device_ms is None or getattr(runner, "device", None) == "cpu":
        return None
    return float(np.median(device_ms(x, iterations=iterations, warmup=warmup)))
