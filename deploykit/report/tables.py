"""The report's content as tables, shared by every view (Markdown, HTML, the console): run
identity, a one-line-per-candidate summary, candidates with every metric per runtime, latency,
layers kept float and stages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.host.progress import Table
from deploykit.recipe import runtime_info
from deploykit.report.format import fmt, metric_label, short
from deploykit.report.latency_table import latency_table
from deploykit.report.verdicts import fastest_runtimes, ship_verdict, step_verdicts

if TYPE_CHECKING:
    from deploykit.report.model import Report

__all__ = ["report_tables", "summary_lines", "summary_table"]


def summary_lines(r: Report) -> list[str]:
    """The verdict first (the candidate to ship), then run identity and machine, one fact per
    line."""
    env = r.environment
    verdict = ship_verdict(r)
    return [
        *([f"verdict: {verdict}"] if verdict else []),
        f"created {r.created_utc} UTC; seed {r.seed}; recipe sha256 {r.recipe_hash[:16]}",
        f"machine: {env.get('cpu_model')} ({env.get('cpu_cores')} cores; INT8 features: "
        f"{', '.join(env.get('cpu_int8_features') or []) or 'unknown'}), threads "
        f"{env.get('threads')}, GPU {env.get('gpu') or 'none'}; {env.get('os', '')}",
        "packages: " + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()),
        *([f"recommendation: {r.recommendation}"] if r.recommendation else []),
    ]


# parity figures a candidate may carry, as the table shows them (a task's other keys stay in
# report.json)
_PARITY = (("max_abs_error", "parity max abs err", ".2e"),
           ("matched_fraction", "parity matched", ".1%"),
           ("min_iou", "parity min IoU", ".4f"),
           ("max_score_diff", "parity max score diff", ".1e"))


def _runtime_label(name: str) -> str:
    try:
        return runtime_info(name).label or name
    except KeyError:   # a runtime an older deploykit had
        return name


def summary_table(r: Report) -> Table:
    """One line per candidate: MACs, the artifact's primary metric and its change, ORT CPU
    latency at batch 1 (end to end, and the network alone where the task timed it)."""
    m = r.primary_metric
    network = any(c.network_latency for c in r.candidates)
    rows = []
    for c in r.candidates:
        ort1 = c.latency_at("onnxruntime-cpu", 1)
        net1 = next((lr for lr in c.network_latency if lr.batch == 1), None)
        rows.append((c.name, f"{c.macs / 1e6:.2f}", fmt(c.artifact(m)),
                     fmt(c.delta_pts.get(m), "+.2f"),
                     *((fmt(getattr(net1, "p50_ms", None), ".3f"),) if network else ()),
                     fmt(getattr(ort1, "p50_ms", None), ".3f"),
                     fmt(getattr(ort1, "speedup_vs_baseline", None), ".2f", "x")))
    timed = ("network p50 b1 (ms)", "end-to-end p50 b1 (ms)", "speed-up e2e") if network else \
        ("ORT p50 b1 (ms)", "speed-up b1")
    return Table(f"deploykit: {r.recipe_name}",
                 ("candidate", "MACs (M)", f"{metric_label(m)} ORT (%)", "Δ (pts)", *timed),
                 rows)


def report_tables(r: Report) -> list[Table]:
    """The report's content as tables: candidates with every metric, latency, whether each
    step paid, layers kept float, stages."""
    m, label = r.primary_metric, metric_label(r.primary_metric)
    runtimes = sorted({k for c in r.candidates for k in c.metrics.get(m, {})})
    others = [x for x in r.metric_names[1:] if any(c.artifact(x) is not None
                                                   for c in r.candidates)]
    parity = [p for p in _PARITY if any(p[0] in c.parity for c in r.candidates)]
    cand_rows = []
    for c in r.candidates:
        size = None if c.onnx_size_bytes is None else c.onnx_size_bytes / 1e6
        cand_rows.append((c.name, c.precision, f"{c.macs / 1e6:.2f}", f"{c.params / 1e6:.3f}",
                          fmt(size, ".3f"), *(fmt(c.metrics.get(m, {}).get(rt))
                                              for rt in runtimes),
                          fmt(c.delta_pts.get(m), "+.2f"),
                          *(fmt(c.artifact(x)) for x in others),
                          *(fmt(c.parity.get(key), spec) for key, _, spec in parity),
                          str(len(c.keep_float))))
    tables = [Table(
        "Candidates",
        ("candidate", "precision", "MACs (M)", "params (M)", "ONNX (MB)",
         *(f"{label} {_runtime_label(rt)} (%)" for rt in runtimes), f"Δ {label} (pts)",
         *(f"{metric_label(x)} artifact (%)" for x in others),
         *(head for _, head, _ in parity), "layers kept float"),
        cand_rows, note=f"{label} on the validation set, measured on each runtime (the "
                        "artifact's in ONNX Runtime, the model's in PyTorch); Δ is the "
                        f"artifact's {label} minus the baseline's, in points. MACs per image "
                        "of the network the techniques work on.", numeric_from=2)]
    tables.append(latency_table(r))
    fastest = fastest_runtimes(r)
    if fastest:
        tables.append(Table(
            "Fastest runtime per candidate",
            ("candidate", "precision", "batch", "fastest", "p50 (ms)", "next fastest",
             "its p50 (ms)", "margin"),
            [(f.candidate, f.precision, str(f.batch), _runtime_label(f.runtime),
              f"{f.p50_ms:.3f}", _runtime_label(f.runner_up) if f.runner_up else "-",
              fmt(f.runner_up_ms, ".3f"),
              fmt(f.runner_up_ms / f.p50_ms if f.runner_up_ms else None, ".2f", "x"))
             for f in fastest],
            note="Where each candidate (in its precision) runs fastest at each batch size, "
                 "end to end, among the runtimes timed; margin: the next fastest runtime's "
                 "p50 over the fastest's. INT8 on PyTorch is a simulation and never timed.",
            numeric_from=2))
    verdicts = step_verdicts(r)
    if verdicts:
        tables.append(Table("Smaller and faster than what it replaces?", ("verdict",),
                            [(v,) for v in verdicts], numeric_from=1))
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
