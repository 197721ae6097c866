"""The ``quantize`` stage: PTQ or QAT to INT8 with explicit Q/DQ, optional FP16 candidate.

See ``deploykit.quant`` for the design (one fake-quant graph serves PTQ, QAT and export).
What becomes INT8 is the task's quantization graph (:meth:`deploykit.tasks.Task.quant_graph`):
a classifier whole; a detector's network, between a float resize and a float decoding and NMS.
With ``max_accuracy_drop`` (``max_map_drop`` on a detector) the layers are ranked by how much
quantizing them costs and the most sensitive fall back to float one at a time, only until the
INT8 model's primary metric is within the bound of the float one (or ``max_float_layers``
fell back). QAT fine-tunes the calibrated model through its fake-quant ops with the task's
QAT loss (a classifier distils from its float model; a detector trains on its own loss).
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
    build_quantized,
    compute_layers,
    keep_sensitive_float,
    layer_sensitivity,
    qat_finetune,
)
from deploykit.recipe import QuantizeSpec
from deploykit.recipe.stages import stage_candidates
from deploykit.runfiles.atomic import write_text
from deploykit.stages.placement import Placement, candidate_placements, check_speed
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.tasks import QuantGraph, Task, get_task, task_of

__all__ = ["check", "run"]


def check(model: nn.Module, spec: QuantizeSpec, first_last: tuple[str, str],
          input_shape: tuple[int, int, int] | None = None, task: Task | None = None) -> None:
    """Before any training: the task can quantize the model, keep_float patterns match layers,
    and a fallback bound has room to keep layers float."""
    task = task or get_task("classification")
    shape = input_shape or (3, 32, 32)
    graph = task.quant_graph(copy.deepcopy(model), shape, first_last)
    graph.keep_float(spec.keep_float)
    if spec.max_float_layers == 0 and spec.max_drop is not None:
        key = "max_accuracy_drop" if spec.max_accuracy_drop is not None else "max_map_drop"
        raise ModelError(f"quantize.{key} needs max_float_layers > 0 to fall back")


def run(state: PipelineState, loaders: Loaders, spec: QuantizeSpec) -> PipelineState:
    """Quantize ``state.model`` (sensitivity, float fallback, QAT as asked); add the INT8 (and
    FP16) candidates."""
    t0 = time.perf_counter()
    float_model = copy.deepcopy(state.model).eval()
    task = task_of(state)
    graph = task.quant_graph(float_model, state.input_shape, state.first_last)
    keep = graph.keep_float(spec.keep_float)
    calib = graph.calibration(loaders.calib)
    metric = task.primary_metric

    def score(model: nn.Module) -> float:
        return task.evaluate(model, loaders.val)[metric]

    float_score = score(float_model)
    metrics: dict = {f"float_{metric}": float_score, "target": spec.target,
                     "weight_bits": SCHEMES[spec.target].weight_bits,
                     "calibration": spec.calibration.method,
                     "calib_images": sum(len(x) for x in calib)}

    def build(k: Sequence[str]) -> QuantizedModel:
        return build_quantized(graph.module, spec, k, calib)

    qm = build(keep)
    ranking = None
    if spec.sensitivity is not None or spec.max_drop is not None or spec.keep_sensitive:
        sens = spec.sensitivity or graph.default_sensitivity
        batches = graph.sensitivity_batches(loaders.val, sens.samples)
        by = sens.metric if all(y is not None for _, y in batches) else "sqnr"
        layers = [n for n in compute_layers(graph.module) if n not in keep]
        log(f"quantize: sensitivity of {len(layers)} layers ({sens.method}, {by})")
        ranking = layer_sensitivity(graph.reference, lambda k: graph.compared(build(k)),
                                    layers, keep, batches, by, sens.method)
        metrics["sensitivity"] = [r.to_dict() for r in ranking]
        unit = " dB" if by == "sqnr" else ""
        log("quantize: most sensitive: " + ", ".join(
            f"{r.layer} ({r.damage:+.2f}{unit})" for r in ranking[:5]))
        if spec.keep_sensitive:
            keep = keep + [r.layer for r in ranking[:spec.keep_sensitive]]
            qm = build(keep)
    if spec.max_drop is not None:
        base = list(keep)
        qm, keep = keep_sensitive_float(build, keep, ranking,
                                        lambda m: score(graph.wrap(m)), float_score,
                                        spec.max_drop, spec.max_float_layers)
        metrics["fallback_float_layers"] = [n for n in keep if n not in base]

    if spec.speed_check is not None and spec.speed_runtime is not None and graph.speed_check:
        qm, keep = _speed_check(graph, qm, spec, keep, state, loaders, calib, float_score,
                                metrics)
    quantized = graph.wrap(qm)
    if spec.mode == "qat":
        metrics.update(_qat(quantized, qm, graph, loaders, spec, state))
    final = task.evaluate(quantized, loaders.val)
    metrics.update({f"int8_torch_{k}": v for k, v in final.items() if k != "loss"})
    metrics["keep_float"] = list(keep)
    log(f"quantize: {spec.mode} int8 {metric} {final[metric]:.2f} (float {float_score:.2f}), "
        f"{len(keep)} layer(s) kept float: {', '.join(keep)}")

    *fp16_name, int8_name = stage_candidates(spec, state.candidates[-1].name)
    if fp16_name:
        state.add_candidate(Candidate(fp16_name[0], Fp16Model(float_model), precision="fp16"))
    state.add_candidate(Candidate(int8_name, quantized, precision="int8",
                                  torch_top1_pct=final[metric], keep_float=list(keep),
                                  arch={"layer_precision": dict(qm.layer_precision)}))
    state.history.append(StageRecord("quantize", spec.model_dump(mode="json", by_alias=True),
                                     metrics, time.perf_counter() - t0))
    return state


def _speed_check(graph: QuantGraph, qm: QuantizedModel, spec: QuantizeSpec, keep: list[str],
                 state: PipelineState, loaders: Loaders, calib: list[torch.Tensor],
                 float_top1: float, metrics: dict) -> tuple[QuantizedModel, list[str]]:
    """Keep the fastest INT8 placement within the bound; record whether INT8 pays here (a
    classifier-shaped graph: one batch in, logits out, judged on top-1)."""
    float_model = graph.module

    def resolved(patterns: list[str]) -> set[str]:
        return set(graph.keep_float(patterns))

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
    check, qm, chosen = check_speed(float_model, build, options,
                                    graph.sensitivity_batches(loaders.val, 2000),
                                    float_top1, state.input_shape, check_spec, qm,
                                    runtime=spec.speed_runtime)
    metrics["speed_check"] = check.to_dict()
    metrics["int8_pays"] = check.int8_pays
    if distributed.is_main():
        write_text(record, json.dumps({"placement": dataclasses.asdict(chosen),
                                       "speed_check": metrics["speed_check"],
                                       "int8_pays": check.int8_pays}, default=str))
    return qm, list(chosen.keep_float)


def _qat(model: nn.Module, qm: QuantizedModel, graph: QuantGraph, loaders: Loaders,
         spec: QuantizeSpec, state: PipelineState) -> dict:
    res = qat_finetune(qm, None, loaders, spec.qat, state.output_dir / "checkpoints" / "qat",
                       state.resume, task_of(state).objective, model=model,
                       loss_fn=graph.qat_loss(spec.qat))
    return {"qat_epochs": res.epochs_run, "qat_seconds": res.seconds,
            "qat_history": res.history}
