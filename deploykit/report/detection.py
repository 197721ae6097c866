"""Report views of detectors: mAP beside the network and end-to-end latency, and a plain
verdict per compressed candidate on whether its artifact is really smaller and faster than the
float candidate before it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.host.progress import Table
from deploykit.report.format import fmt

if TYPE_CHECKING:
    from deploykit.report.model import Report

__all__ = ["detection_summary", "detection_tables", "detection_verdicts"]


def detection_summary(r: Report) -> Table:
    rows = []
    for c in r.candidates:
        e2e, net = c.latency_at("onnxruntime-cpu", 1), next(iter(c.network_latency), None)
        rows.append((c.name, f"{c.macs / 1e6:.2f}", fmt(c.artifact_map50_pct()),
                     fmt(c.delta_map50_pts, "+.2f"), fmt(getattr(net, "p50_ms", None), ".3f"),
                     fmt(getattr(e2e, "p50_ms", None), ".3f"),
                     fmt(getattr(e2e, "speedup_vs_baseline", None), ".2f", "x")))
    return Table(f"deploykit: {r.recipe_name}",
                 ("candidate", "MACs (M)", "mAP@.5 ORT", "Δ (pts)",
                  "network p50 b1 (ms)", "end-to-end p50 b1 (ms)", "speed-up e2e"), rows)


def detection_verdicts(r: Report) -> list[str]:
    """Per compressed detector, whether its deployed artifact is actually smaller and faster
    (end to end) than the float candidate before it, said plainly when it is not."""
    lines = []
    for i, c in enumerate(r.candidates[1:], 1):
        twin = r.candidates[i - 1]
        size = (c.onnx_size_bytes or 0) < (twin.onnx_size_bytes or 0)
        a, b = c.latency_at("onnxruntime-cpu", 1), twin.latency_at("onnxruntime-cpu", 1)
        if a is None or b is None:
            lines.append(f"{c.name}: {'smaller' if size else 'NOT smaller'} than {twin.name}; "
                         "latency not measured")
            continue
        faster = a.p50_ms < b.p50_ms
        lines.append(f"{c.name}: {'smaller' if size else 'NOT smaller'} and "
                     f"{'faster' if faster else 'NOT faster'} end to end than {twin.name} "
                     f"({(c.onnx_size_bytes or 0) / 1e6:.2f} vs "
                     f"{(twin.onnx_size_bytes or 0) / 1e6:.2f} MB, p50 {a.p50_ms:.2f} vs "
                     f"{b.p50_ms:.2f} ms at batch 1)")
    return lines


def detection_tables(r: Report) -> list[Table]:
    rows = []
    for c in r.candidates:
        size = None if c.onnx_size_bytes is None else c.onnx_size_bytes / 1e6
        rows.append((c.name, c.precision, f"{c.macs / 1e6:.2f}", f"{c.params / 1e6:.3f}",
                     fmt(size, ".3f"), fmt(c.map_pct.get("onnxruntime-cpu")),
                     fmt(c.map50_pct.get("onnxruntime-cpu")), fmt(c.map50_pct.get("torch-cpu")),
                     fmt(c.delta_map50_pts, "+.2f"),
                     fmt(c.parity.get("matched_fraction"), ".1%"),
                     fmt(c.parity.get("min_iou"), ".4f"),
                     fmt(c.parity.get("max_score_diff"), ".1e")))
    tables = [Table(
        "Candidates", ("candidate", "precision", "MACs (M)", "params (M)", "ONNX (MB)",
                       "mAP ORT", "mAP@.5 ORT", "mAP@.5 PyTorch", "Δ mAP@.5 (pts)",
                       "parity matched", "parity min IoU", "parity max score diff"),
        rows, note="MACs per image of the network (backbone, neck, heads; a two-stage "
                   "detector's box head over all its proposals), not of the resize, decoding "
                   "and NMS. COCO mAP@[.5:.95] and mAP@.5 (torchmetrics, faster-coco-eval "
                   "backend) on the validation set; ORT is the end-to-end ONNX artifact "
                   "(decode + NMS inside). Parity: PyTorch's detections matched in the "
                   "artifact's (IoU >= 0.5, same label) on the first validation images.",
        numeric_from=2)]
    lat = []
    for c in r.candidates:
        for what, recs in (("network", c.network_latency), ("end to end", c.latency)):
            for lr in recs:
                lat.append((c.name, what, str(lr.batch), f"{lr.p50_ms:.3f}",
                            f"{lr.p90_ms:.3f}", f"{lr.mean_ms:.3f} ± {lr.std_ms:.3f}",
                            fmt(lr.speedup_vs_baseline, ".2f", "x")))
    tables.append(Table(
        "Latency (ONNX Runtime CPU)", ("candidate", "graph", "batch", "p50", "p90",
                                       "mean ± std", "speed-up"), lat,
        note="Milliseconds per image; the network alone (resized, normalised input to head "
             "outputs) and end to end (image to final detections: resize, network, decode, "
             "NMS); candidates timed alternately; speed-up over the baseline's same graph.",
        numeric_from=2))
    verdicts = detection_verdicts(r)
    if verdicts:
        tables.append(Table("Smaller and faster than its float twin?", ("verdict",),
                            [(v,) for v in verdicts], numeric_from=1))
    return tables
