"""The report's content as tables, shared by every view (Markdown, HTML, the console): run
identity, a one-line-per-candidate summary, candidates with every metric per runtime, latency,
layers kept float and stages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.host.progress import Table
from deploykit.report.detection import detection_summary, detection_tables
from deploykit.report.format import fmt, metric_label, short
from deploykit.report.latency_table import latency_table

if TYPE_CHECKING:
    from deploykit.report.model import Report

__all__ = ["report_tables", "summary_lines", "summary_table"]


def summary_lines(r: Report) -> list[str]:
    """Run identity and machine, one fact per line."""
    env = r.environment
    return [
        f"created {r.created_utc} UTC; seed {r.seed}; recipe sha256 {r.recipe_hash[:16]}",
        f"machine: {env.get('cpu_model')} ({env.get('cpu_cores')} cores; INT8 features: "
        f"{', '.join(env.get('cpu_int8_features') or []) or 'unknown'}), threads "
        f"{env.get('threads')}, GPU {env.get('gpu') or 'none'}; {env.get('os', '')}",
        "packages: " + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()),
        *([f"recommendation: {r.recommendation}"] if r.recommendation else []),
    ]


def summary_table(r: Report) -> Table:
    """One line per candidate: MACs, the artifact's primary metric and its change, ORT CPU
    latency at batch 1."""
    if r.task == "detection":
        return detection_summary(r)
    m = r.primary_metric
    rows = []
    for c in r.candidates:
        ort1 = c.latency_at("onnxruntime-cpu", 1)
        speedup = None if ort1 is None else ort1.speedup_vs_baseline
        rows.append((c.name, f"{c.macs / 1e6:.2f}", fmt(c.artifact(m)),
                     fmt(c.delta_pts.get(m), "+.2f"), fmt(getattr(ort1, "p50_ms", None), ".3f"),
                     fmt(speedup, ".2f", "x")))
    return Table(f"deploykit: {r.recipe_name}",
                 ("candidate", "MACs (M)", f"{metric_label(m)} ORT (%)", "Δ (pts)",
                  "ORT p50 b1 (ms)", "speed-up b1"), rows)


def report_tables(r: Report) -> list[Table]:
    """The report's content as tables: candidates, latency, layers kept float, stages."""
    if r.task == "detection":
        return detection_tables(r) + _stage_tables(r)
    m, label = r.primary_metric, metric_label(r.primary_metric)
    runtimes = sorted({k for c in r.candidates for k in c.metrics.get(m, {})})
    cand_rows = []
    for c in r.candidates:
        size = None if c.onnx_size_bytes is None else c.onnx_size_bytes / 1e6
        cand_rows.append((c.name, c.precision, f"{c.macs / 1e6:.2f}", f"{c.params / 1e6:.3f}",
                          fmt(size, ".3f"), *(fmt(c.metrics.get(m, {}).get(rt))
                                              for rt in runtimes),
                          fmt(c.delta_pts.get(m), "+.2f"),
                          fmt(c.parity.get("max_abs_error"), ".2e"), str(len(c.keep_float))))
    tables = [Table(
        "Candidates",
        ("candidate", "precision", "MACs (M)", "params (M)", "ONNX (MB)",
         *(f"{label} {rt} (%)" for rt in runtimes), f"Δ {label} (pts)", "parity max abs err",
         "layers kept float"),
        cand_rows, note=f"{label.capitalize()} on the validation set, measured on each "
                        f"runtime; Δ is the artifact's {label} minus the baseline's.",
        numeric_from=2)]
    tables.append(latency_table(r))
    kept = [(c.name, c.precision, ", ".join(c.keep_float)) for c in r.candidates if c.keep_float]
    if kept:
        tables.append(Table("Layers kept in float", ("candidate", "precision", "layers"), kept,
                            numeric_from=3))
    for c in r.candidates:
        lp = c.arch.get("layer_precision")
        if lp:
            tables.append(Table(f"Layer precision: {c.name}", ("layer", "precision"),
                                list(lp.items()), numeric_from=2))
    return tables + _stage_tables(r)


def _stage_tables(r: Report) -> list[Table]:
    tables = []
    if r.stages:
        tables.append(Table(
            "Stages", ("stage", "seconds", "peak memory GiB", "metrics"),
            [(s["name"], f"{s['seconds']:.1f}",
              "-" if s.get("peak_rss_gb") is None else f"{s['peak_rss_gb']:.2f}",
              ", ".join(f"{k}={short(v)}" for k, v in s.get("metrics", {}).items()))
             for s in r.stages], note="Wall-clock seconds spent in each stage, and the "
            "process's peak resident memory during it.", numeric_from=1))
    return tables
