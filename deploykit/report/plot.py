"""Pareto plot of a report: the artifact's primary metric (top-1, mAP@.5, ...) against p50
latency, one panel per runtime and batch.

The data behind the figure (:func:`pareto_panels`, :func:`pareto_frontier`) is separate from
the drawing so tests and other tools can check exactly what is plotted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploykit.report.format import metric_label
from deploykit.report.model import Report
from deploykit.runfiles.atomic import write_with

__all__ = ["ParetoPoint", "pareto_frontier", "pareto_panels", "render_pareto", "save_pareto"]


@dataclass(frozen=True)
class ParetoPoint:
    """One candidate on one panel."""

    name: str
    latency_ms: float
    top1_pct: float   # the report's primary metric (top-1 for a classifier, mAP@.5 ...)


def pareto_panels(report: Report) -> dict[tuple[str, int], list[ParetoPoint]]:
    """``(runtime, batch) -> points`` for every candidate with both a latency and a value of
    the report's primary metric.

    The metric is the artifact's (ONNX Runtime when measured), so every panel compares what is
    deployed, and the latency is that runtime's p50 at that batch.
    """
    panels: dict[tuple[str, int], list[ParetoPoint]] = {}
    for c in report.candidates:
        top1 = c.artifact(report.primary_metric)
        if top1 is None:
            continue
        for lr in c.latency:
            panels.setdefault((lr.key, lr.batch), []).append(ParetoPoint(c.name, lr.p50_ms, top1))
    return dict(sorted(panels.items()))


def pareto_frontier(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point beats on both axes (faster-or-equal and more-or-equally accurate,
    strictly better on one), ordered from fastest to slowest."""
    front = []
    for p in points:
        dominated = any(q.latency_ms <= p.latency_ms and q.top1_pct >= p.top1_pct
                        and (q.latency_ms < p.latency_ms or q.top1_pct > p.top1_pct)
                        for q in points)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p.latency_ms, -p.top1_pct))


def render_pareto(report: Report):
    """A matplotlib ``Figure`` (no pyplot, no global state): one subplot per (runtime, batch)."""
    from matplotlib.figure import Figure

    panels = pareto_panels(report)
    label = metric_label(report.primary_metric)
    n = max(1, len(panels))
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(6.0 * cols, 4.2 * rows), layout="constrained")
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no candidate has both latency and accuracy", ha="center")
        ax.set_axis_off()
        return fig
    for i, ((runtime, batch), points) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        front = pareto_frontier(points)
        on_front = {p.name for p in front}
        others = [p for p in points if p.name not in on_front]
        if others:
            ax.scatter([p.latency_ms for p in others], [p.top1_pct for p in others],
                       color="#9aa0a6", label="dominated", zorder=2)
        ax.scatter([p.latency_ms for p in front], [p.top1_pct for p in front], color="#d93025",
                   label="Pareto frontier", zorder=3)
        ax.step([p.latency_ms for p in front], [p.top1_pct for p in front], where="post",
                color="#d93025", alpha=0.6, zorder=1)
        for p in points:
            ax.annotate(p.name, (p.latency_ms, p.top1_pct), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
        ax.margins(x=0.15, y=0.12)
        ax.set_title(f"{runtime}, batch {batch}")
        ax.set_xlabel("p50 latency per batch (ms)")
        ax.set_ylabel(f"{label} of the artifact (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{report.recipe_name}: accuracy vs latency (up and left is better)")
    return fig


def save_pareto(report: Report, path: str | Path) -> Path:
    """Render and write the plot as PNG (atomically)."""
    fig = render_pareto(report)
    return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
