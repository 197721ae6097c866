"""The lowrank stage: factorise convolutions/linears (SVD or Tucker-2), optionally fine-tune.

Records per-layer ranks, MACs and weight reconstruction error; layers left alone are listed
with the reason. The usual recovery is a ``distill`` stage right after.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from torch import nn

from deploykit import lowrank
from deploykit.data import Loaders
from deploykit.errors import RecipeError
from deploykit.host.progress import Table, log, print_table
from deploykit.models import count_macs_params, load_checkpoint, make_checkpoint
from deploykit.recipe import LowRankSpec
from deploykit.recipe.stages import stage_candidates
from deploykit.runfiles.atomic import save_torch
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.tasks import task_of
from deploykit.train import fit

__all__ = ["check", "run"]


def check(model: nn.Module, spec: LowRankSpec, first_last: tuple[str, str],
          input_shape: tuple[int, int, int] | None = None, task: Any = None) -> None:
    """Fail before training when the layer patterns match nothing to factorise."""
    chosen, _ = lowrank.eligible_layers(model, spec.layers, spec.keep, first_last)
    if not chosen:
        raise RecipeError(f"lowrank: layers {spec.layers} minus keep {spec.keep} leave no "
                          "convolution or linear layer to factorise")


def run(state: PipelineState, loaders: Loaders, spec: LowRankSpec) -> PipelineState:
    t0 = time.perf_counter()
    shape = state.input_shape
    prev = state.candidates[-1]
    model = copy.deepcopy(state.model)
    base_macs, base_params = count_macs_params(model, shape)
    ckpt_path = state.output_dir / "lowrank.pt"
    metrics: dict = {}
    task = task_of(state)
    metric = task.primary_metric
    if state.resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        record = ck["arch"]["lowrank"]
        lowrank.rebuild(model, record)
        model.load_state_dict(ck["state_dict"])
        metrics = dict(ck["meta"]["metrics"])
        log(f"lowrank: resumed the finished stage from {ckpt_path}")
    else:
        plans = lowrank.factorise(model, spec, shape, state.first_last)
        record = [p.to_dict() for p in plans]
        metrics[f"factorised_{metric}"] = task.evaluate(model, loaders.val)[metric]
        if spec.finetune is not None:
            res = fit(model, loaders.train, loaders.val, spec.finetune,
                      state.output_dir / "checkpoints" / "lowrank", state.resume,
                      desc="lowrank fine-tune", objective=task.objective)
            metrics.update({f"finetune_{metric}": res.final, "finetune_seconds": res.seconds})
    macs, params = count_macs_params(model, shape)
    want = spec.target.macs_ratio
    if want is not None and abs(macs / base_macs - want) > 0.02:
        log(f"lowrank: warning: reached {macs / base_macs:.3f}x MACs, not {want}x: the "
            "layers allowed by `layers`/`keep` cannot remove more (or their ranks move in "
            "coarse steps); factorise more layers or add a prune stage")
    metrics.update(method=spec.method, layers=record, macs_before=base_macs, macs_after=macs,
                   macs_ratio=macs / base_macs, params_before=base_params, params_after=params,
                   left_alone={p["name"]: p["status"] for p in record
                               if p["status"] != "factorised"})
    arch = {**prev.arch, "lowrank": record}
    save_torch(make_checkpoint(model, arch, {"metrics": metrics}), ckpt_path)
    state.history.append(StageRecord("lowrank", spec.model_dump(mode="json"), metrics,
                                     time.perf_counter() - t0))
    top1 = metrics.get(f"finetune_{metric}", metrics.get(f"factorised_{metric}"))
    name = stage_candidates(spec, state.candidates[-1].name)[-1]
    state.add_candidate(Candidate(name, model, torch_top1_pct=top1, arch=arch))
    rows = [[p["name"], p["method"], "x".join(map(str, p["ranks"])) or "-",
             "x".join(map(str, p["full_ranks"])) or "-",
             f"{p['macs_before'] / 1e6:.2f}", f"{p['macs_after'] / 1e6:.2f}",
             "-" if p["rel_error"] is None else f"{p['rel_error']:.3f}", p["status"]]
            for p in record]
    print_table(Table("lowrank: per layer", ("layer", "method", "rank", "full", "MMACs before",
                                             "MMACs after", "weight error", "status"), rows))
    log(f"lowrank ({spec.method}): MACs {base_macs / 1e6:.2f} M -> {macs / 1e6:.2f} M "
        f"({macs / base_macs:.3f}x), {metric} after factorising "
        f"{metrics[f'factorised_{metric}']:.2f}")
    return state
