"""Measure every detector candidate the same way: export -> parity -> mAP -> alternating latency.

Each candidate is exported twice: end to end (image in, final boxes, scores and labels out:
the artifact a user deploys) and its network alone (the resized, normalised batch in, the
head's outputs out), because on small devices the decoding and NMS around the network often
cost as much as the network (an SSD-style detector's end-to-end graph is joined from its
resize, that network file and its decoding; an INT8 detector's network carries explicit Q/DQ
while the rest stays float). Parity compares the end-to-end artifact's detections with
PyTorch's as matched sets (IoU, same label, score difference); mAP is computed on the whole
validation set in both runtimes. Latency is ONNX Runtime on the CPU at batch 1, candidates
timed alternately, end to end on a real validation image (NMS cost depends on the scene) and
the network on that image's resized tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deploykit.bench import time_alternating
from deploykit.data import Loaders
from deploykit.errors import ParityError
from deploykit.host.progress import log
from deploykit.models import count_macs_params, file_size_bytes
from deploykit.recipe import BenchSpec, ExportSpec
from deploykit.report import CandidateReport, LatencyRecord
from deploykit.runtimes import OrtRunner
from deploykit.state import Candidate
from deploykit.tasks.detect.export import (
    export_detector,
    export_detector_split,
    export_network,
    fixed_input_size,
)
from deploykit.tasks.detect.metric import mean_average_precision
from deploykit.tasks.detect.models import DetectorNetwork, roi_cost
from deploykit.tasks.detect.network_quant import counting_network, runtime_network
from deploykit.tasks.detect.parity import match_detections

__all__ = ["PARITY_IMAGES", "measure_detectors", "runner_detections"]

PARITY_IMAGES = 16
RUNTIME = "onnxruntime-cpu"


def _torch_detections(model: torch.nn.Module, images: list[torch.Tensor]) -> list[dict]:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 16):
            out += [{k: v.cpu() for k, v in d.items()} for d in model(images[i:i + 16])]
    return out


def runner_detections(runner: OrtRunner, images: list[torch.Tensor]) -> list[dict]:
    """An end-to-end artifact's detections on each image (batch of one), as tensors."""
    out = []
    for im in images:
        d = runner.run_all(im[None].numpy())
        out.append({"boxes": torch.from_numpy(d["boxes"]), "scores": torch.from_numpy(
            d["scores"]), "labels": torch.from_numpy(d["labels"]).long()})
    return out


def _parity(name: str, ref: list[dict], got: list[dict], model: torch.nn.Module,
            export: ExportSpec, precision: str) -> dict[str, float]:
    limits = export.onnx.parity
    top_k = getattr(model, "detections_per_img", None)
    # INT8: above the floor, and above twice the model's own score threshold, so that the
    # artifact's matches (searched down to half the floor) are never cut by that threshold
    floor = max(limits.int8_min_detection_score, 2 * getattr(model, "score_thresh", 0.0)) \
        if precision == "int8" else 0.0
    rows = [match_detections(r, g, iou=0.5, top_k=top_k, min_score=floor)
            for r, g in zip(ref, got, strict=True)]
    # float: every image must match; INT8: the detections of all images together, since
    # rounding that differs from the simulation's (about 1% of the outputs' range) flips an
    # NMS decision between two overlapping boxes now and then
    total = sum(p.count_ref for p in rows)
    pooled = sum(p.matched_fraction * p.count_ref for p in rows) / total if total else 1.0
    summary = {"matched_fraction": pooled if precision == "int8" else
               min(p.matched_fraction for p in rows),
               "min_iou": min(p.min_iou for p in rows),
               "max_score_diff": max(p.max_score_diff for p in rows),
               "images": len(rows), "min_score": floor}
    least = limits.thresholds(precision)["min_top1_agreement"]
    if summary["matched_fraction"] < least:
        raise ParityError(
            f"{name}: the exported detector matches only {summary['matched_fraction']:.1%} of "
            f"PyTorch's detections scored above {floor} on "
            f"{'' if precision == 'int8' else 'one of '}{len(rows)} validation "
            f"images (IoU >= 0.5, same label; the export.onnx.parity agreement limit for "
            f"{precision} is {least}); the ONNX graph does not compute what the model does: "
            "report it with the model name")
    return summary


def measure_detectors(candidates: list[Candidate], loaders: Loaders, export: ExportSpec,
                      bench: BenchSpec, out_dir: Path) -> list[CandidateReport]:
    """Export, check and measure each detector candidate (see the module notes).

    Raises:
        ExportError: a candidate cannot be exported.
        ParityError: an exported candidate's detections differ from PyTorch's.
    """
    images, targets = [], []
    for ims, ts in loaders.val:
        images += ims
        targets += ts
    onnx_dir = out_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    shape = loaders.input_shape
    reports, e2e, nets, inputs = [], {}, {}, None
    for cand in candidates:
        model = cand.model.eval()
        with torch.no_grad():   # the network's input: resized and padded as the model does
            hw = tuple(model.transform([images[0]])[0].tensors.shape[-2:])
        macs, params = count_macs_params(counting_network(model), (shape[0], *hw))
        roi_macs, roi_params = roi_cost(model)   # a two-stage detector's box head
        macs, params = macs + roi_macs, params + roi_params
        path, net_path = onnx_dir / f"{cand.name}.onnx", onnx_dir / f"{cand.name}.network.onnx"
        if fixed_input_size(model) is not None:
            export_detector_split(model, runtime_network(model), images[:8], path, net_path,
                                  export.onnx.opset)
        else:
            export_detector(model, images[:8], path, export.onnx.opset)
            export_network(DetectorNetwork(model), hw, net_path, export.onnx.opset)
        cand.onnx_path = path
        runner = OrtRunner(path, bench.threads)
        ref = _torch_detections(model, images)
        got = runner_detections(runner, images)
        parity = _parity(cand.name, ref[:PARITY_IMAGES], got[:PARITY_IMAGES], model, export,
                         cand.precision)
        m_torch = mean_average_precision(ref, targets)
        m_ort = mean_average_precision(got, targets)
        log(f"{cand.name}: mAP@.5 {m_ort.map50_pct:.2f} (ONNX Runtime) / "
            f"{m_torch.map50_pct:.2f} (PyTorch), {parity['matched_fraction']:.1%} of "
            f"detections matched")
        reports.append(CandidateReport(
            name=cand.name, precision=cand.precision, macs=macs, params=params,
            onnx_file=str(path.relative_to(out_dir)), onnx_size_bytes=file_size_bytes(path),
            parity=parity, keep_float=list(cand.keep_float), arch=dict(cand.arch),
            metrics={"map_pct": {"torch-cpu": m_torch.map_pct, RUNTIME: m_ort.map_pct},
                     "map50_pct": {"torch-cpu": m_torch.map50_pct, RUNTIME: m_ort.map50_pct}}))
        e2e[cand.name], nets[cand.name] = runner, OrtRunner(net_path, bench.threads)
        if inputs is None:
            batch, _ = model.transform([images[0]])
            inputs = (images[0][None].numpy(), batch.tensors.numpy().astype(np.float32))
    base = reports[0]
    for r in reports:
        r.delta_pts["map50_pct"] = r.map50_pct[RUNTIME] - base.map50_pct[RUNTIME]
    if bench.iterations and RUNTIME in bench.runtimes:
        for field, runners, x in (("latency", e2e, inputs[0]), ("network_latency", nets,
                                                                   inputs[1])):
            stats = time_alternating({n: (lambda r=r, x=x: r.run_all(x))
                                      for n, r in runners.items()},
                                     1, bench.iterations, bench.warmup,
                                     target_rel_ci=bench.target_rel_ci,
                                     max_iterations=bench.max_iterations,
                                     budget_s=bench.time_budget_s)
            for r in reports:
                rec = LatencyRecord.from_stats(stats[r.name], runtime="onnxruntime",
                                               device="cpu", precision=r.precision,
                                               threads=bench.threads, name=RUNTIME)
                rec.speedup_vs_baseline = stats[base.name].p50_ms / rec.p50_ms
                getattr(r, field).append(rec)
    return reports
