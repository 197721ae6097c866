"""Compare two reports candidate by candidate: accuracy, cost and latency, A against B."""

from __future__ import annotations

from deploykit.host.progress import Table
from deploykit.report.format import metric_label
from deploykit.report.model import CandidateReport, Report

__all__ = ["compare_reports"]


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None else f"{v:{spec}}"


def _change(a: float | None, b: float | None, relative: bool) -> str:
    if a is None or b is None:
        return "-"
    if relative:
        return "-" if a == 0 else f"{100.0 * (b / a - 1.0):+.1f}%"
    return f"{b - a:+.2f}"


def _rows(name: str, a: CandidateReport | None, b: CandidateReport | None,
          names: list[str]) -> list[tuple]:
    def get(c, fn):
        return None if c is None else fn(c)

    size = lambda c: None if c.onnx_size_bytes is None else c.onnx_size_bytes / 1e6  # noqa: E731
    metrics = [(f"{metric_label(m)} artifact{' (%)' if m.endswith('_pct') else ''}",
                lambda c, m=m: c.artifact(m), ".2f", False) for m in names]
    metrics += [("MACs (M)", lambda c: c.macs / 1e6, ".2f", True),
               ("params (M)", lambda c: c.params / 1e6, ".3f", True),
               ("ONNX size (MB)", size, ".3f", True)]
    keys = []
    for c in (a, b):
        for lr in [] if c is None else c.latency:
            if (lr.key, lr.batch) not in keys:
                keys.append((lr.key, lr.batch))
    for key, batch in sorted(keys):
        metrics.append((f"p50 {key} b{batch} (ms)",
                        lambda c, k=key, bt=batch: getattr(c.latency_at(k, bt), "p50_ms", None),
                        ".3f", True))
    rows = []
    for label, fn, spec, relative in metrics:
        va, vb = get(a, fn), get(b, fn)
        rows.append((name, label, _num(va, spec), _num(vb, spec), _change(va, vb, relative)))
    return rows


def compare_reports(a: Report, b: Report) -> Table:
    """A table with one row per candidate and metric: value in A, value in B, and the change
    (points for accuracy, percent for the rest). Candidates in only one report show ``-``."""
    names = [c.name for c in a.candidates]
    names += [c.name for c in b.candidates if c.name not in names]
    by_a = {c.name: c for c in a.candidates}
    by_b = {c.name: c for c in b.candidates}
    metric_names = list(dict.fromkeys([*a.metric_names, *b.metric_names]))
    rows = []
    for n in names:
        rows += _rows(n, by_a.get(n), by_b.get(n), metric_names)
    note = (f"A: {a.recipe_name} ({a.created_utc}, {a.environment.get('cpu_model')}); "
            f"B: {b.recipe_name} ({b.created_utc}, {b.environment.get('cpu_model')})")
    return Table("Comparison", ("candidate", "metric", "A", "B", "change"), rows, note=note,
                 numeric_from=2)
