"""``results.csv``: one row per candidate and measured (runtime, batch), with the task's
primary metric (artifact, PyTorch and the change over the baseline) and every other metric's
artifact value beside the latency figures."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deploykit.report.model import Report

__all__ = ["CSV_COLUMNS", "csv_columns", "to_csv"]

_LATENCY = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput_ips",
            "speedup_vs_baseline")
_COST = ("macs", "params", "onnx_size_bytes", "layers_kept_float", "gpu_memory_mb", "tflops",
         "fp16_peak_fraction")


def _stem(metric: str) -> str:
    return metric.removesuffix("_pct")


def _metric_columns(metrics: list[str]) -> tuple[str, ...]:
    first, *rest = metrics
    return (f"{_stem(first)}_artifact_pct", f"{_stem(first)}_torch_pct",
            f"delta_{_stem(first)}_pts", *(f"{_stem(m)}_artifact_pct" for m in rest))


def csv_columns(metrics: list[str]) -> tuple[str, ...]:
    """The header for a report whose metrics are ``metrics``, the primary one first."""
    return ("candidate", "precision", "runtime", "setup", "batch", "threads",
            *_metric_columns(metrics), *_LATENCY, *_COST)


CSV_COLUMNS = csv_columns(["top1_pct"])
"""The header of a classification report that measured top-1 alone."""


def to_csv(r: Report) -> str:
    """The CSV text of ``r`` (see the module notes)."""
    metrics = r.metric_names
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=csv_columns(metrics), lineterminator="\n")
    w.writeheader()
    first = metrics[0]
    for c in r.candidates:
        values = [c.artifact(first), c.metrics.get(first, {}).get("torch-cpu"),
                  c.delta_pts.get(first), *(c.artifact(m) for m in metrics[1:])]
        common = {"candidate": c.name, "precision": c.precision,
                  **dict(zip(_metric_columns(metrics), values, strict=True)),
                  "macs": c.macs, "params": c.params, "onnx_size_bytes": c.onnx_size_bytes,
                  "layers_kept_float": ";".join(c.keep_float)}
        for lr in c.latency or [None]:
            row = dict(common)
            if lr is not None:
                row.update(runtime=lr.key, setup=lr.setup, batch=lr.batch, threads=lr.threads,
                           gpu_memory_mb=lr.peak_memory_mb, tflops=lr.tflops,
                           fp16_peak_fraction=lr.peak_fraction,
                           **{k: getattr(lr, k) for k in _LATENCY})
            w.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()
