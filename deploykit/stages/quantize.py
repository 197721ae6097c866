"""The ``quantize`` stage: PTQ or QAT to INT8 with explicit Q/DQ, optional FP16 candidate.

See ``deploykit.quant`` for the design (one fake-quant graph serves PTQ, QAT and export).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from deploykit.data import Loaders
from deploykit.errors import ModelError
from deploykit.kd import kd_loss_fn
from deploykit.progress import log
from deploykit.quant.prepare import QuantizedModel, compute_layers, prepare, resolve_keep_float
from deploykit.quant.scheme import SCHEMES
from deploykit.quant.sensitivity import accuracy_on, layer_sensitivity
from deploykit.stage_specs import QatSpec, QuantizeSpec, SensitivitySpec
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.train import FitResult, evaluate, fit

__all__ = ["Fp16Model", "build_quantized", "check", "qat_finetune", "run"]


def check(model: nn.Module, spec: QuantizeSpec, first_last: tuple[str, str]) -> None:
    """Before any training: keep_float patterns must match layers, and a fallback bound needs
    room to keep layers float."""
    resolve_keep_float(model, spec.keep_float, first_last)
    if spec.max_float_layers == 0 and spec.max_accuracy_drop is not None:
        raise ModelError("quantize.max_accuracy_drop needs max_float_layers > 0 to fall back")


def build_quantized(model: nn.Module, spec: QuantizeSpec, keep: Sequence[str],
                    calib: Sequence[torch.Tensor]) -> QuantizedModel:
    """Prepare the fake-quant model for ``spec.target`` and calibrate it on ``calib``."""
    c = spec.calibration
    qm = prepare(model, SCHEMES[spec.target], keep, c.method, c.bins, c.percentile)
    qm.calibrate(calib)
    return qm


class Fp16Model(nn.Module):
    """FP16 weights and activations with float32 inputs and outputs (for GPU targets)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(model).half().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.half()).float()


def _val_subset(loaders: Loaders, samples: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out, n = [], 0
    for x, y in loaders.val:
        out.append((x, y))
        n += len(y)
        if n >= samples:
            break
    return out


def run(state: PipelineState, loaders: Loaders, spec: QuantizeSpec) -> PipelineState:
    t0 = time.perf_counter()
    float_model = copy.deepcopy(state.model).eval()
    keep = resolve_keep_float(float_model, spec.keep_float, state.first_last)
    calib = [x for x, _ in loaders.calib]
    float_top1 = evaluate(float_model, loaders.val)["top1_pct"]
    metrics: dict = {"float_top1_pct": float_top1, "target": spec.target,
                     "calibration": spec.calibration.method,
                     "calib_images": sum(len(x) for x in calib)}

    def build(k: Sequence[str]) -> QuantizedModel:
        return build_quantized(float_model, spec, k, calib)

    qm = build(keep)
    ranking = None
    if spec.sensitivity is not None or spec.max_accuracy_drop is not None:
        sens = spec.sensitivity or SensitivitySpec()
        batches = _val_subset(loaders, sens.samples)
        layers = [n for n in compute_layers(float_model) if n not in keep]
        log(f"quantize: sensitivity of {len(layers)} layers ({sens.method}, {sens.metric})")
        ranking = layer_sensitivity(float_model, build, layers, keep, batches, sens.metric,
                                    sens.method)
        metrics["sensitivity"] = [r.to_dict() for r in ranking]
        log("quantize: most sensitive: " + ", ".join(
            f"{r.layer} ({r.damage:+.2f})" for r in ranking[:5]))
    if spec.max_accuracy_drop is not None:
        base = list(keep)
        qm, keep = _fallback(build, keep, ranking, loaders, spec, float_top1)
        metrics["fallback_float_layers"] = [n for n in keep if n not in base]

    if spec.mode == "qat":
        qm, qat_metrics = _qat(qm, float_model, loaders, spec, state)
        metrics.update(qat_metrics)
    top1 = evaluate(qm, loaders.val)["top1_pct"]
    metrics["int8_torch_top1_pct"] = top1
    metrics["keep_float"] = list(keep)
    log(f"quantize: {spec.mode} int8 top-1 {top1:.2f}% (float {float_top1:.2f}%), "
        f"{len(keep)} layer(s) kept float: {', '.join(keep)}")

    if spec.fp16:
        state.add_candidate(Candidate("fp16", Fp16Model(float_model), precision="fp16"))
    state.add_candidate(Candidate(f"{spec.mode}-int8", qm, precision="int8",
                                  torch_top1_pct=top1, keep_float=list(keep),
                                  arch={"layer_precision": dict(qm.layer_precision)}))
    state.history.append(StageRecord("quantize", spec.model_dump(mode="json", by_alias=True),
                                     metrics, time.perf_counter() - t0))
    return state


def _fallback(build, keep, ranking, loaders, spec, float_top1):
    """Keep the most sensitive layers float, one more at a time, until within the bound
    (judged on the whole validation set), or until ``max_float_layers`` were added."""
    batches = _val_subset(loaders, 10**9)
    keep = list(keep)
    qm = build(keep)
    drop = float_top1 - accuracy_on(qm, batches)
    for added, r in enumerate(ranking):
        if drop <= spec.max_accuracy_drop or added >= spec.max_float_layers:
            break
        keep.append(r.layer)
        qm = build(keep)
        drop = float_top1 - accuracy_on(qm, batches)
        log(f"quantize: {r.layer} kept float -> drop {drop:.2f} points")
    if drop > spec.max_accuracy_drop:
        log(f"quantize: WARNING: still {drop:.2f} points below float after keeping "
            f"{len(keep)} layers float (max_float_layers {spec.max_float_layers})")
    return qm, keep


def qat_finetune(qm: QuantizedModel, teacher: nn.Module, loaders: Loaders, q: QatSpec,
                 checkpoint_dir: Path | None = None, resume: bool = False) -> FitResult:
    """Fine-tune the calibrated ``qm`` through its fake-quant ops with ``teacher`` as KD target;
    BatchNorm statistics and ranges update for the first epochs, then stay frozen."""

    def on_epoch_start(epoch: int) -> None:
        qm.set_bn_frozen(epoch >= q.freeze_bn_after)
        qm.set_observers(epoch < q.freeze_observers_after)

    res = fit(qm, loaders.train, loaders.val, q, checkpoint_dir, resume,
              loss_fn=kd_loss_fn(teacher, q.kd_alpha, q.kd_temperature, q.label_smoothing),
              desc="qat", on_epoch_start=on_epoch_start)
    qm.set_bn_frozen(True)
    qm.set_observers(False)
    qm.eval()
    return res


def _qat(qm: QuantizedModel, teacher: nn.Module, loaders: Loaders, spec: QuantizeSpec,
         state: PipelineState) -> tuple[QuantizedModel, dict]:
    res = qat_finetune(qm, teacher, loaders, spec.qat,
                       state.output_dir / "checkpoints" / "qat", state.resume)
    return qm, {"qat_epochs": res.epochs_run, "qat_seconds": res.seconds,
                "qat_history": res.history}
