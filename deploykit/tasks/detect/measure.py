"""How a detector candidate is measured: its artifacts and its parity (the loop is
:func:`deploykit.measure.measure_candidates`, the same for every task).

Each candidate is exported twice: end to end (image in, final boxes, scores and labels out:
the artifact a user deploys) and its network alone (the resized, normalised batch in, the
head's outputs out), because on small devices the decoding and NMS around the network often
cost as much as the network (an SSD-style detector's end-to-end graph is joined from its
resize, that network file and its decoding; an INT8 detector's network carries explicit Q/DQ
while the rest stays float). Parity compares the end-to-end artifact's detections with
PyTorch's as matched sets (IoU, same label, score difference). Latency is at batch 1 (the
end-to-end graph takes one image), end to end on a real validation image (NMS cost depends on
the scene) and the network on that image's resized tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploykit.errors import ParityError
from deploykit.measure import Artifact
from deploykit.models import count_macs_params
from deploykit.recipe import ExportSpec
from deploykit.runtimes import Runner
from deploykit.state import Candidate
from deploykit.tasks.detect.export import (
    EndToEnd,
    export_detector,
    export_detector_split,
    export_network,
    fixed_input_size,
)
from deploykit.tasks.detect.models import DetectorNetwork, roi_cost
from deploykit.tasks.detect.network_quant import counting_network, runtime_network
from deploykit.tasks.detect.parity import match_detections

__all__ = ["PARITY_IMAGES", "detector_artifact", "detector_parity", "runner_detections"]

PARITY_IMAGES = 16


def first_images(loader: Any, n: int) -> list[torch.Tensor]:
    """The first ``n`` images of a detection loader."""
    out: list[torch.Tensor] = []
    for ims, _ in loader:
        out += ims
        if len(out) >= n:
            break
    return out[:n]


def runner_detections(runner: Runner, images: list[torch.Tensor]) -> list[dict]:
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


def detector_artifact(cand: Candidate, loaders: Any, spec: ExportSpec, out_dir: Path
                      ) -> Artifact:
    """Export ``cand`` end to end (``onnx/<name>.onnx``) and its network alone
    (``onnx/<name>.network.onnx``); see the module notes."""
    images = first_images(loaders.val, 8)
    model = cand.model.eval()
    with torch.no_grad():   # the network's input: resized and padded as the model does
        batch = model.transform([images[0]])[0].tensors
    hw = tuple(batch.shape[-2:])
    macs, params = count_macs_params(counting_network(model), (loaders.input_shape[0], *hw))
    roi_macs, roi_params = roi_cost(model)   # a two-stage detector's box head
    macs, params = macs + roi_macs, params + roi_params
    onnx_dir = out_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    path, net_path = onnx_dir / f"{cand.name}.onnx", onnx_dir / f"{cand.name}.network.onnx"
    opset = spec.onnx.opset
    if fixed_input_size(model) is not None:
        export_detector_split(model, runtime_network(model), images, path, net_path, opset)
    else:
        export_detector(model, images, path, opset)
        export_network(DetectorNetwork(model), hw, net_path, opset)
    image = images[0][None].numpy()
    net_input = batch.numpy().astype(np.float32)
    network = Artifact(net_path, runtime_network(model), macs - roi_macs, params - roi_params,
                       lambda b: net_input, batch_sizes=(1,))
    return Artifact(path, EndToEnd(model), macs, params, lambda b: image, batch_sizes=(1,),
                    arch=dict(cand.arch), network=network)


def detector_parity(cand: Candidate, art: Artifact, reference: Runner, runner: Runner,
                    loaders: Any, spec: ExportSpec) -> dict[str, Any]:
    """The artifact's detections on ``runner`` against PyTorch's, as matched sets, on the
    first validation images.

    Raises:
        ParityError: too few detections matched (``export.onnx.parity``'s agreement limit).
    """
    images = first_images(loaders.val, PARITY_IMAGES)
    on = "" if runner.name == "onnxruntime-cpu" else f" on {runner.name} ({runner.setup})"
    return _parity(f"{cand.name}{on}", runner_detections(reference, images),
                   runner_detections(runner, images), cand.model, spec, runner.precision)
