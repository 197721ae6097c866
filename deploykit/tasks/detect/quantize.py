"""The ``quantize`` stage on a detector: the network (backbone, neck and heads) to INT8, the
resize, anchors, box decoding and NMS float (see ``deploykit.tasks.detect.network_quant``).

The first conv and the heads' prediction convs stay float by default (``keep_float: [first,
last]``). With ``max_map_drop``, the other layers are ranked by how much quantizing them
costs (SQNR of the network's outputs, everything else INT8) and the most sensitive fall back
to float one at a time, only until the INT8 detector's mAP@.5 is within ``max_map_drop``
points of the float one (or ``max_float_layers`` fell back). QAT fine-tunes the calibrated
detector through its fake-quant ops with its own detection loss.

The INT8 network is exported between a float resize and a float decoding with fixed anchors,
so the INT8 candidate of a detector that keeps the aspect ratio (RetinaNet, FCOS) resizes
every image to the recipe's square ``data.image_size``, as SSD does: on square images that is
what the float detector does too.
"""

from __future__ import annotations

import copy
import time

from torch import nn

from deploykit.data import Loaders
from deploykit.errors import ModelError
from deploykit.host.progress import log
from deploykit.quant import (
    SCHEMES,
    QuantizedModel,
    build_quantized,
    compute_layers,
    keep_sensitive_float,
    layer_sensitivity,
)
from deploykit.recipe import QuantizeSpec, SensitivitySpec
from deploykit.recipe.stages import stage_candidates
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.tasks import task_of
from deploykit.tasks.detect.export import fixed_input_size
from deploykit.tasks.detect.metric import evaluate_detector
from deploykit.tasks.detect.models import DetectorNetwork, is_two_stage
from deploykit.tasks.detect.network_quant import (
    detector_keep_float,
    head_keys,
    heads_only,
    network_batches,
    quantized_detector,
)
from deploykit.train import fit

__all__ = ["check", "run"]

SENSITIVITY_IMAGES = 64   # default images for the SQNR ranking


def check(model: nn.Module, spec: QuantizeSpec, first_last: tuple[str, str],
          input_shape: tuple[int, int, int] | None = None) -> None:
    """Before any training: a single-stage detector with anchors (its INT8 network exports
    between a float resize and a float decoding, at a fixed input size), and keep_float
    patterns that match."""
    if is_two_stage(model) or not all(hasattr(model, a) for a in (
            "transform", "anchor_generator", "postprocess_detections")):
        raise ModelError(f"quantize on a detector: {type(model).__name__} is not a single-stage "
                         "detector with anchors (SSD, SSDlite, RetinaNet, FCOS); INT8 of "
                         "two-stage detectors (Faster R-CNN: proposals between two networks) "
                         "is not built: drop the quantize stage for it")
    detector_keep_float(DetectorNetwork(model, with_features=True), spec.keep_float)
    if spec.max_float_layers == 0 and spec.max_map_drop is not None:
        raise ModelError("quantize.max_map_drop needs max_float_layers > 0 to fall back")


def run(state: PipelineState, loaders: Loaders, spec: QuantizeSpec) -> PipelineState:
    """Quantize ``state.model``'s network (fallback and QAT as asked); add the INT8 candidate."""
    t0 = time.perf_counter()
    float_det = copy.deepcopy(state.model).eval()
    size = state.input_shape[1]
    if fixed_input_size(float_det) is None:
        float_det.transform.fixed_size = (size, size)
        log(f"quantize: {type(float_det).__name__} keeps the aspect ratio; its INT8 candidate "
            f"resizes every image to {size}x{size} (data.image_size), as SSD does, so its "
            "anchors are fixed (the same on square images; non-square ones are stretched)")
    network = DetectorNetwork(float_det, with_features=True).eval()
    keys = head_keys(float_det, size)
    keep = detector_keep_float(network, spec.keep_float)
    calib = network_batches(float_det, loaders.calib)
    float_map = evaluate_detector(float_det, loaders.val)["map50_pct"]
    metrics: dict = {"float_map50_pct": float_map, "target": spec.target,
                     "weight_bits": SCHEMES[spec.target].weight_bits,
                     "calibration": spec.calibration.method,
                     "calib_images": sum(len(x) for x in calib)}

    def build(k: list[str]) -> QuantizedModel:
        return build_quantized(network, spec, k, calib)

    def map50(qm: QuantizedModel) -> float:
        return evaluate_detector(quantized_detector(float_det, qm, keys), loaders.val)["map50_pct"]

    qm = build(keep)
    if spec.sensitivity is not None or spec.max_map_drop is not None or spec.keep_sensitive:
        sens = spec.sensitivity or SensitivitySpec(metric="sqnr", samples=SENSITIVITY_IMAGES)
        images = [im for ims, _ in loaders.val for im in ims][:sens.samples]
        batches = [(x, None) for x in network_batches(float_det, images)]
        layers = [n for n in compute_layers(network) if n not in keep]
        log(f"quantize: SQNR sensitivity of {len(layers)} layers ({sens.method})")
        ranking = layer_sensitivity(DetectorNetwork(float_det).eval(),
                                    lambda k: heads_only(build(k), len(keys)), layers, keep,
                                    batches, "sqnr", sens.method)
        metrics["sensitivity"] = [r.to_dict() for r in ranking]
        log("quantize: most sensitive: " + ", ".join(
            f"{r.layer} ({r.damage:+.2f} dB)" for r in ranking[:5]))
        if spec.keep_sensitive:
            keep = keep + [r.layer for r in ranking[:spec.keep_sensitive]]
            qm = build(keep)
        if spec.max_map_drop is not None:
            base = list(keep)
            qm, keep = keep_sensitive_float(build, keep, ranking, map50, float_map,
                                            spec.max_map_drop, spec.max_float_layers)
            metrics["fallback_float_layers"] = [n for n in keep if n not in base]
    qdet = quantized_detector(float_det, qm, keys)
    if spec.mode == "qat":
        metrics.update(_qat(qdet, qm, loaders, spec, state))
    final = evaluate_detector(qdet, loaders.val)
    metrics.update(int8_torch_map50_pct=final["map50_pct"], int8_torch_map_pct=final["map_pct"],
                   keep_float=list(keep))
    log(f"quantize: {spec.mode} int8 mAP@.5 {final['map50_pct']:.2f} (float {float_map:.2f}), "
        f"{len(keep)} layer(s) kept float")
    name = stage_candidates(spec, state.candidates[-1].name)[-1]
    state.add_candidate(Candidate(name, qdet, precision="int8", keep_float=list(keep),
                                  arch={"layer_precision": dict(qm.layer_precision)}))
    state.history.append(StageRecord("quantize", spec.model_dump(mode="json", by_alias=True),
                                     metrics, time.perf_counter() - t0))
    return state


def _qat(qdet: nn.Module, qm: QuantizedModel, loaders: Loaders, spec: QuantizeSpec,
         state: PipelineState) -> dict:
    """Fine-tune through the fake-quant ops (BatchNorm and ranges update for the first
    epochs, then stay frozen); the best validation mAP@.5 weights are kept."""
    q = spec.qat

    def on_epoch_start(epoch: int) -> None:
        qm.set_bn_frozen(epoch >= q.freeze_bn_after)
        qm.set_observers(epoch < q.freeze_observers_after)

    res = fit(qdet, loaders.train, loaders.val, q, state.output_dir / "checkpoints" / "qat",
              state.resume, desc="qat", keep_best=True, on_epoch_start=on_epoch_start,
              objective=task_of(state, "detection").objective)
    qm.set_bn_frozen(True)
    qm.set_observers(False)
    qdet.eval()
    return {"qat_epochs": res.epochs_run, "qat_seconds": res.seconds, "qat_history": res.history}
