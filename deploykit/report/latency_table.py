"""The report's latency table: one row per candidate, runtime set-up and batch size; GPU rows
add memory, TFLOP/s and the fraction of the GPU's FP16 peak, and a runtime that cannot time a
candidate (INT8 on torch-cuda) gets a row saying why instead of a number."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.host.progress import Table
from deploykit.report.format import fmt

if TYPE_CHECKING:
    from deploykit.report.model import LatencyRecord, Report

__all__ = ["latency_table", "setup_label"]


def setup_label(lr: LatencyRecord) -> str:
    """How the row was run: the runner's set-up, or for older reports its threads."""
    return lr.setup or f"{lr.precision}, {lr.threads} threads"


def latency_table(r: Report) -> Table:
    """Every latency row; where a task timed its network alone beside the artifact (a
    detector), a "graph" column tells the network rows from the end-to-end ones."""
    records = [lr for c in r.candidates for lr in (*c.latency, *c.network_latency)]
    has_device = any(lr.device_p50_ms is not None for lr in records)
    has_gpu = any(lr.device == "cuda" for lr in records)
    has_cpu = any(lr.gmacs_per_s is not None for lr in records)
    graphs = any(c.network_latency for c in r.candidates)
    headers = ("candidate", *(("graph",) if graphs else ()), "runtime", "set-up", "batch", "p50",
               "p50 95% CI", "p90", "p99", "mean ± std",
               *(("device p50",) if has_device else ()), "images/s",
               *(("GPU memory (MB)", "TFLOP/s", "of FP16 peak") if has_gpu else ()),
               *(("GMAC/s", "of CPU peak") if has_cpu else ()),
               "speed-up")
    rows = []
    for c in r.candidates:
        parts = (("network", c.network_latency), ("end to end", c.latency)) if graphs else \
            (("", c.latency),)
        for graph, recs in parts:
            for lr in recs:
                ci = ("-" if lr.p50_ci_low_ms is None else
                      f"{lr.p50_ci_low_ms:.3f}–{lr.p50_ci_high_ms:.3f}")
                on_gpu = lr.device == "cuda" and lr.peak_fraction is not None
                gpu = ((fmt(lr.peak_memory_mb, ".1f"), fmt(lr.tflops, ".2f"),
                        fmt(100 * lr.peak_fraction if on_gpu else None, ".1f", "%"))
                       if has_gpu else ())
                on_cpu = lr.gmacs_per_s is not None
                cpu = ((fmt(lr.gmacs_per_s, ".1f"),
                        fmt(100 * lr.peak_fraction if on_cpu and lr.peak_fraction is not None
                            else None, ".0f", "%")) if has_cpu else ())
                rows.append((c.name, *((graph,) if graphs else ()), lr.key, setup_label(lr),
                             str(lr.batch), f"{lr.p50_ms:.3f}", ci, f"{lr.p90_ms:.3f}",
                             f"{lr.p99_ms:.3f}", f"{lr.mean_ms:.3f} ± {lr.std_ms:.3f}",
                             *((fmt(lr.device_p50_ms, ".3f"),) if has_device else ()),
                             f"{lr.throughput_ips:.0f}", *gpu, *cpu,
                             fmt(lr.speedup_vs_baseline, ".2f", "x")))
        for runtime, why in c.not_timed.items():
            lead = (c.name, *(("",) if graphs else ()), runtime, why)
            rows.append((*lead, *(["-"] * (len(headers) - len(lead)))))
    note = ("Per batch, milliseconds, end to end (host copies included); candidates timed "
            "alternately in one process; speed-up is the baseline's p50 over the candidate's "
            "on the same runtime, set-up and batch.")
    if graphs:
        note += (" Network: the network alone (resized, normalised input to its outputs); end "
                 "to end: the artifact (image to final outputs, e.g. resize, network, decode, "
                 "NMS).")
    if has_device:
        note += " Device p50: GPU compute alone (CUDA events, input already on the GPU)."
    if has_gpu:
        note += (" GPU memory: the model's weights plus the peak one forward allocates; "
                 "TFLOP/s: 2 x MACs x batch over the device p50 (end to end when not measured); "
                 "of FP16 peak: that rate over the GPU's dense FP16 tensor-core peak.")
    if has_cpu:
        bases = sorted({lr.peak_basis for lr in records if lr.peak_basis})
        note += (" GMAC/s: MACs x batch over the p50; of CPU peak: that rate over what the "
                 "row's threads can do at most in its precision"
                 + (": " + "; ".join(bases) if bases else "") + ". Above 100% means the "
                 "cores ran above the clock the peak assumes.")
    return Table("Latency", headers, rows, note=note, numeric_from=3 + graphs)
