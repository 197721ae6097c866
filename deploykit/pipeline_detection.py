"""``run`` for ``task: detection``: the same order as a classification run (baseline, stages,
export, parity, measurement, report, gate) with detectors' own parts: box data, mAP as the
metric, stage drivers that prune the network and distil with Chen et al.'s terms, and an
end-to-end artifact (decode + NMS inside) timed beside its network alone.
"""

from __future__ import annotations

import datetime as _dt
import importlib
from pathlib import Path
from types import ModuleType

from deploykit import distributed
from deploykit.atomic import save_torch
from deploykit.bench import environment, yardstick_ms
from deploykit.bench.mean_ap import evaluate_detector
from deploykit.data.detect import build_detection_loaders
from deploykit.distill.det_objective import detector_loss
from deploykit.gate import apply_gate, load_baseline
from deploykit.measure_detection import measure_detectors
from deploykit.models import make_checkpoint
from deploykit.recipe import Recipe, recipe_hash, recipe_to_dict
from deploykit.report import Report, write_report_files
from deploykit.resources import MemoryMeter
from deploykit.restore import load_detector
from deploykit.run_stages import AfterStage, run_stages
from deploykit.state import PipelineState, StageRecord
from deploykit.train import fit, seed_everything

__all__ = ["detection_stage", "run_detection"]


def detection_stage(kind: str) -> ModuleType:
    """The detector driver of stage ``kind`` (``deploykit.stages.det_<kind>``)."""
    return importlib.import_module(f"deploykit.stages.det_{kind}")


def run_detection(recipe: Recipe, out: Path, resume: bool, gate: bool,
                  meter: MemoryMeter, after_stage: AfterStage | None = None) -> Report | None:
    """Run a detection recipe into ``out`` (see :func:`deploykit.pipeline.run`)."""
    gates = recipe.gates if gate else None
    gate_baseline = None if gates is None else load_baseline(gates)
    seed_everything(recipe.seed)
    size = recipe.data.image_size
    shape = (3, size, size)
    model = load_detector(recipe.model, size)
    stages = [detection_stage(s.kind) for s in recipe.stages]
    for module, spec in zip(stages, recipe.stages, strict=True):   # before any training
        module.check(model, spec, ("", ""), shape)
    loaders = build_detection_loaders(recipe.data, recipe.seed, recipe.model.num_classes)

    meter.start("baseline training")
    record = None
    if recipe.model.checkpoint is None and recipe.train is not None:
        res = fit(model, loaders.train, loaders.val, recipe.train,
                  out / "checkpoints" / "baseline", resume, loss_fn=detector_loss,
                  evaluator=evaluate_detector, metric="map50_pct", desc="baseline")
        save_torch(make_checkpoint(model, meta={"recipe": recipe.name}), out / "baseline.pt")
        record = StageRecord("train", recipe.train.model_dump(mode="json"),
                             {"val_map50_pct": res.final, "epochs": recipe.train.epochs},
                             res.seconds, round(meter.peak_gb, 2))
    state = PipelineState.start(model, ("", ""), shape, out, resume)
    state.model_spec = recipe.model
    if record is not None:
        state.history.append(record)
    state = run_stages(stages, recipe.stages, state, loaders, meter, after_stage)
    meter.start("measurement (export, parity, mAP, latency)")
    if not distributed.is_main():
        distributed.barrier()
        return None
    yardstick = yardstick_ms(recipe.bench.threads)
    candidates = measure_detectors(state.candidates, loaders, recipe.export, recipe.bench, out)
    yardstick = (yardstick + yardstick_ms(recipe.bench.threads)) / 2
    report = Report(recipe_name=recipe.name, recipe_hash=recipe_hash(recipe), seed=recipe.seed,
                    created_utc=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    environment={**environment(recipe.bench.threads),
                                 "yardstick_ms": round(yardstick, 4)},
                    recipe=recipe_to_dict(recipe),
                    stages=[vars(r) for r in state.history], candidates=candidates,
                    task="detection", primary_metric="map50_pct")
    if gates is not None:
        report.gate = apply_gate(report, gates, gate_baseline, out / "gate.xml", out).to_dict()
    write_report_files(report, out)
    distributed.barrier()
    return report
