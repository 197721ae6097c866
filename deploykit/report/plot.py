"""Pareto plot of a report: the artifact's primary metric (top-1, mAP@.5, ...) against p50
latency, one panel per runtime and batch.

The data behind the figure (:func:`pareto_panels`, :func:`pareto_frontier`) is separate from
the drawing so tests and other tools can check exactly what is plotted. Steps a later stage
recovers (``prune`` before ``prune+distill``) are drawn apart, hollow, and left out of the
frontier and of the vertical axis's range (below it, they sit on the axis's lower edge with
their value in the label), so the axis spans the candidates a user would ship. Labels are
placed so that none overlaps another or a point. No simulated latency is plotted (the
measurement reports none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploykit.report.format import metric_label
from deploykit.report.model import Report
from deploykit.report.verdicts import intermediate
from deploykit.runfiles.atomic import write_with

__all__ = ["ParetoPoint", "pareto_frontier", "pareto_panels", "render_pareto", "save_pareto"]


@dataclass(frozen=True)
class ParetoPoint:
    """One candidate on one panel."""

    name: str
    latency_ms: float
    top1_pct: float   # the report's primary metric (top-1 for a classifier, mAP@.5 ...)
    intermediate: bool = False   # a step a later stage recovers: drawn apart


def pareto_panels(report: Report) -> dict[tuple[str, int], list[ParetoPoint]]:
    """``(runtime, batch) -> points`` for every candidate with both a latency and a value of
    the report's primary metric.

    The metric is the artifact's (ONNX Runtime when measured), so every panel compares what is
    deployed, and the latency is that runtime's p50 at that batch.
    """
    panels: dict[tuple[str, int], list[ParetoPoint]] = {}
    steps = intermediate(report)
    for c in report.candidates:
        top1 = c.artifact(report.primary_metric)
        if top1 is None:
            continue
        for lr in c.latency:
            panels.setdefault((lr.key, lr.batch), []).append(
                ParetoPoint(c.name, lr.p50_ms, top1, c.name in steps))
    return dict(sorted(panels.items()))


def pareto_frontier(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point beats on both axes (faster-or-equal and more-or-equally accurate,
    strictly better on one), ordered from fastest to slowest; steps a later stage recovers
    take no part."""
    points = [p for p in points if not p.intermediate]
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = pareto_panels(report)
    label = metric_label(report.primary_metric)
    n = max(1, len(panels))
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(6.0 * cols, 4.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no candidate has both latency and accuracy", ha="center")
        ax.set_axis_off()
        return fig
    for i, ((runtime, batch), points) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        _draw_panel(ax, points, label)
        ax.set_title(f"{runtime}, batch {batch}")
    fig.suptitle(f"{report.recipe_name}: accuracy vs latency (up and left is better)")
    fig.canvas.draw()   # lay the figure out, then place the labels where nothing is
    for ax, points in zip(fig.axes, panels.values(), strict=True):
        _place_labels(ax, points)
    return fig


def _draw_panel(ax, points: list[ParetoPoint], label: str) -> None:
    front = pareto_frontier(points)
    on_front = {p.name for p in front}
    main = [p for p in points if not p.intermediate]
    others = [p for p in main if p.name not in on_front]
    steps = [p for p in points if p.intermediate]
    if others:
        ax.scatter([p.latency_ms for p in others], [p.top1_pct for p in others],
                   color="#9aa0a6", label="dominated", zorder=2)
    ax.scatter([p.latency_ms for p in front], [p.top1_pct for p in front], color="#d93025",
               label="Pareto frontier", zorder=3)
    ax.step([p.latency_ms for p in front], [p.top1_pct for p in front], where="post",
            color="#d93025", alpha=0.6, zorder=1)
    values = [p.top1_pct for p in main] or [p.top1_pct for p in points]
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.15, 0.5)
    top = hi + pad if hi >= 100 else min(hi + pad, 100.0)   # percent: no room above 100
    ax.set_ylim(lo - pad, top)
    xs = [p.latency_ms for p in points]
    xpad = max((max(xs) - min(xs)) * 0.15, 0.05 * max(xs))
    ax.set_xlim(max(0.0, min(xs) - xpad), max(xs) + xpad)
    if steps:
        bottom = lo - pad
        ax.scatter([p.latency_ms for p in steps], [max(p.top1_pct, bottom) for p in steps],
                   facecolors="none", edgecolors="#5f6368",
                   marker="o", label="step a later stage recovers", zorder=2, clip_on=False)
    ax.set_xlabel("p50 latency per batch (ms)")
    ax.set_ylabel(f"{label} of the artifact (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)


# label offsets (points) tried in turn: right, left, above, below, then further out
_OFFSETS = [(6, 4), (6, -12), (-6, 4), (-6, -12), (0, 10), (0, -16), (10, 16), (10, -24),
            (-10, 16), (-10, -24), (16, 28), (16, -36), (-16, 28), (-16, -36)]


def _place_labels(ax, points: list[ParetoPoint]) -> None:
    """Annotate each point with its name (and value, for a step drawn on the lower edge) at
    the first offset whose box overlaps no label already placed, no point and no legend, and
    stays in the axes; a label pushed aside gets a leader line to its point."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    lo = ax.get_ylim()[0]
    frame = ax.get_window_extent(renderer)
    radius = 6 * ax.figure.dpi / 72   # a marker, in pixels
    dots = [Bbox.from_bounds(x - radius, y - radius, 2 * radius, 2 * radius)
            for x, y in (ax.transData.transform((p.latency_ms, max(p.top1_pct, lo)))
                         for p in points)]
    legend = ax.get_legend()
    placed = [] if legend is None else [legend.get_window_extent(renderer)]
    for p in sorted(points, key=lambda q: (q.latency_ms, -q.top1_pct)):
        y = max(p.top1_pct, lo)
        text = p.name if p.top1_pct >= lo else f"{p.name} ({p.top1_pct:.1f}, below)"
        for k, (dx, dy) in enumerate(_OFFSETS):
            ann = ax.annotate(text, (p.latency_ms, y), textcoords="offset points",
                              xytext=(dx, dy), fontsize=8, ha="left" if dx >= 0 else "right",
                              annotation_clip=False,   # a leader line when pushed aside
                              arrowprops=None if k == 0 else {
                                  "arrowstyle": "-", "color": "#5f6368", "lw": 0.6,
                                  "shrinkA": 0, "shrinkB": 4})
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer).expanded(1.05, 1.15)   # text alone
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            free = not any(box.overlaps(b) for b in placed) and not any(
                box.overlaps(d) for d in dots)
            if (inside and free) or k == len(_OFFSETS) - 1:
                placed.append(box)
                break
            ann.remove()


def save_pareto(report: Report, path: str | Path) -> Path:
    """Render and write the plot as PNG (atomically)."""
    fig = render_pareto(report)
    return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
