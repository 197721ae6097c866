"""Build small, fully controlled reports for report/gate/compare tests."""

from __future__ import annotations

import numpy as np

from deploykit.bench import summarize
from deploykit.report import CandidateReport, LatencyRecord, Report


def latency(p50_ms: float, batch: int = 1, runtime: str = "onnxruntime", jitter: float = 0.02,
            n: int = 50, seed: int = 0, speedup: float | None = None) -> LatencyRecord:
    """A record summarising ``n`` timings around ``p50_ms`` with relative spread ``jitter``."""
    rng = np.random.default_rng(seed)
    times_s = p50_ms * (1 + jitter * rng.standard_normal(n)) / 1e3
    st = summarize(times_s, batch)
    return LatencyRecord.from_stats(st, runtime=runtime, device="cpu", precision="fp32",
                                    threads=2, speedup_vs_baseline=speedup)


def make_report(cand_top1: float = 90.0, cand_ms: dict[int, float] | None = None,
                base_ms: dict[int, float] | None = None, size_bytes: int | None = 500_000,
                seed: int = 0, name: str = "prune", base_top1: float = 91.0) -> Report:
    """A baseline and one pruned candidate with latency on onnxruntime-cpu."""
    base_ms = base_ms or {1: 2.0, 64: 40.0}
    cand_ms = cand_ms or {1: 1.0, 64: 20.0}
    base_lat = [latency(ms, b, seed=seed + b, speedup=1.0) for b, ms in base_ms.items()]
    cand_lat = []
    for b, ms in cand_ms.items():
        rec = latency(ms, b, seed=seed + 100 + b)
        rec.speedup_vs_baseline = base_lat[list(base_ms).index(b)].p50_ms / rec.p50_ms \
            if b in base_ms else None
        cand_lat.append(rec)
    base = CandidateReport("baseline", "fp32", 40_000_000, 270_000, "baseline.onnx", 1_080_000,
                           {"top1_pct": {"onnxruntime-cpu": base_top1, "torch-cpu": base_top1}},
                           {"top1_pct": 0.0}, {"max_abs_error": 1e-6}, base_lat)
    cand = CandidateReport(name, "fp32", 20_000_000, 130_000, f"{name}.onnx", size_bytes,
                           {"top1_pct": {"onnxruntime-cpu": cand_top1,
                                         "torch-cpu": cand_top1 + 0.01}},
                           {"top1_pct": cand_top1 - base_top1}, {"max_abs_error": 2e-6},
                           cand_lat, keep_float=["conv1", "fc"])
    return Report("demo", "ab" * 32, 0, "2026-11-23 00:00:00",
                  {"cpu_model": "test cpu", "cpu_cores": 2, "threads": 2, "packages": {}},
                  stages=[{"name": "prune", "params": {}, "metrics": {"macs_ratio": 0.5},
                           "seconds": 12.5}],
                  candidates=[base, cand])
