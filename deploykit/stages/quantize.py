"""The ``quantize`` stage: PTQ or QAT to INT8 with explicit Q/DQ, optional FP16 candidate.

See ``deploykit.quant`` for the design (one fake-quant graph serves PTQ, QAT and export).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Sequence

import torch
from torch import nn

from deploykit.data import Loaders
from deploykit.errors import ModelError
from deploykit.host import distributed
from deploykit.host.progress import log
from deploykit.quant import (
    SCHEMES,
    Fp16Model,
    QuantizedModel,
    accuracy_on,
    build_quantized,
    compute_layers,
    keep_sensitive_float,
    layer_sensitivity,
    qat_finetune,
    resolve_keep_float,
)
from deploykit.recipe import QuantizeSpec, SensitivitySpec
from deploykit.recipe.stages import stage_candidates
from deploykit.runfiles.atomic import write_text
from deploykit.stages.placement import Placement, candidate_placements, check_speed
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.tasks import task_of

__all__ = ["check", "run"]


def check(model: nn.Module, spec: QuantizeSpec, first_last: tuple[str, str],
          input_shape: tuple[int, int, int] | None = None) -> None:
    """Before any training: keep_float patterns must match layers, and a fallback bound needs
    room to keep layers float."""
    resolve_keep_float(model, spec.keep_float, first_last)
    if spec.max_float_layers == 0 and spec.max_accuracy_drop is not None:
        raise ModelError("quantize.max_accuracy_drop needs max_float_layers > 0 to fall back")


def _val_subset(loaders: Loaders, samples: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out, n = [], 0
    for x, y in loaders.val:
        out.append((x, y))
        n += len(y)
        if n >= samples:
            break
    return out


def run(state: PipelineState, loaders: Loaders, spec: QuantizeSpec) -> PipelineState:
    """Quantize ``state.model`` (sensitivity, float fallback, QAT as asked); add the INT8 (and
    FP16) candidates."""
    t0 = time.perf_counter()
    float_model = copy.deepcopy(state.model).eval()
    keep = resolve_keep_float(float_model, spec.keep_float, state.first_last)
    calib = [x for x, _ in loaders.calib]
    task = task_of(state)
    metric = task.primary_metric
    float_top1 = task.evaluate(float_model, loaders.val)[metric]
    metrics: dict = {f"float_{metric}": float_top1, "target": spec.target,
                     "weight_bits": SCHEMES[spec.target].weight_bits,
                     "calibration": spec.calibration.method,
                     "calib_images": sum(len(x) for x in calib)}

    def build(k: Sequence[str]) -> QuantizedModel:
        return build_quantized(float_model, spec, k, calib)

    qm = build(keep)
    ranking = None
    if spec.sensitivity is not None or spec.max_accuracy_drop is not None or \
            spec.keep_sensitive:
        sens = spec.sensitivity or SensitivitySpec()
        batches = _val_subset(loaders, sens.samples)
        layers = [n for n in compute_layers(float_model) if n not in keep]
        log(f"quantize: sensitivity of {len(layers)} layers ({sens.method}, {sens.metric})")
        ranking = layer_sensitivity(float_model, build, layers, keep, batches, sens.metric,
                                    sens.method)
        metrics["sensitivity"] = [r.to_dict() for r in ranking]
        log("quantize: most sensitive: " + ", ".join(
            f"{r.layer} ({r.damage:+.2f})" for r in ranking[:5]))
        if spec.keep_sensitive:
            keep = keep + [r.layer for r in ranking[:spec.keep_sensitive]]
            qm = build(keep)
    if spec.max_accuracy_drop is not None:
        base = list(keep)
        every = _val_subset(loaders, 10**9)
        qm, keep = keep_sensitive_float(build, keep, ranking, lambda m: accuracy_on(m, every),
                                        float_top1, spec.max_accuracy_drop,
                                        spec.max_float_layers)
        metrics["fallback_float_layers"] = [n for n in keep if n not in base]

    if spec.speed_check is not None and spec.target == "onnxruntime-cpu":
        qm, keep = _speed_check(float_model, qm, spec, keep, state, loaders, calib, float_top1,
                                metrics)
    if spec.mode == "qat":
        qm, qat_metrics = _qat(qm, float_model, loaders, spec, state)
        metrics.update(qat_metrics)
    top1 = task.evaluate(qm, loaders.val)[metric]
    metrics[f"int8_torch_{metric}"] = top1
    metrics["keep_float"] = list(keep)
    log(f"quantize: {spec.mode} int8 {metric} {top1:.2f} (float {float_top1:.2f}), "
        f"{len(keep)} layer(s) kept float: {', '.join(keep)}")

    *fp16_name, int8_name = stage_candidates(spec, state.candidates[-1].name)
    if fp16_name:
        state.add_candidate(Candidate(fp16_name[0], Fp16Model(float_model), precision="fp16"))
    state.add_candidate(Candidate(int8_name, qm, precision="int8",
                                  torch_top1_pct=top1, keep_float=list(keep),
                                  arch={"layer_precision": dict(qm.layer_precision)}))
    state.history.append(StageRecord("quantize", spec.model_dump(mode="json", by_alias=True),
                                     metrics, time.perf_counter() - t0))
    return state


def _speed_check(float_model: nn.Module, qm: QuantizedModel, spec: QuantizeSpec, keep: list[str],
                 state: PipelineState, loaders: Loaders, calib: list[torch.Tensor],
                 float_top1: float, metrics: dict) -> tuple[QuantizedModel, list[str]]:
    """Keep the fastest INT8 placement within the bound; record whether INT8 pays here."""
    def resolved(patterns: list[str]) -> set[str]:
        return set(resolve_keep_float(float_model, patterns, state.first_last))

    # "every layer INT8": drop the default first/last, keep what the user named or fell back
    defaults = resolved([p for p in spec.keep_float if p in ("first", "last")])
    named = resolved([p for p in spec.keep_float if p not in ("first", "last")])
    every_layer = [n for n in keep if n not in defaults or n in named]
    scheme = SCHEMES[spec.target]
    options = candidate_placements(keep, every_layer,
                                   any(isinstance(m, nn.MaxPool2d) for m in float_model.modules()),
                                   scheme.int8_maxpool)

    def build(p: Placement) -> QuantizedModel:
        return build_quantized(float_model, spec, p.keep_float, calib,
                               dataclasses.replace(scheme, int8_maxpool=p.int8_maxpool,
                                                   per_channel_weights=not p.per_tensor_weights))

    check_spec = spec.speed_check
    if spec.max_accuracy_drop is not None:   # the stage's own bound is the stricter one
        check_spec = check_spec.model_copy(update={"max_accuracy_drop": min(
            check_spec.max_accuracy_drop, spec.max_accuracy_drop)})
    # the choice rests on timings, which differ from run to run: a resumed run reuses it
    record = state.output_dir / "checkpoints" / "quantize-placement.json"
    if state.resume and record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        chosen = Placement(**{**saved["placement"],
                              "keep_float": tuple(saved["placement"]["keep_float"])})
        log(f"quantize: reusing the placement {chosen.name!r} the interrupted run chose "
            f"({record})")
        metrics.update(speed_check=saved["speed_check"], int8_pays=saved["int8_pays"])
        return build(chosen), list(chosen.keep_float)
    check, qm, chosen = check_speed(float_model, build, options, _val_subset(loaders, 2000),
                                    float_top1, state.input_shape, check_spec, qm)
    metrics["speed_check"] = check.to_dict()
    metrics["int8_pays"] = check.int8_pays
    if distributed.is_main():
        write_text(record, json.dumps({"placement": dataclasses.asdict(chosen),
                                       "speed_check": metrics["speed_check"],
                                       "int8_pays": check.int8_pays}, default=str))
    return qm, list(chosen.keep_float)


def _qat(qm: QuantizedModel, teacher: nn.Module, loaders: Loaders, spec: QuantizeSpec,
         state: PipelineState) -> tuple[QuantizedModel, dict]:
    res = qat_finetune(qm, teacher, loaders, spec.qat,
                       state.output_dir / "checkpoints" / "qat", state.resume,
                       task_of(state).objective)
    return qm, {"qat_epochs": res.epochs_run, "qat_seconds": res.seconds,
                "qat_history": res.history}
