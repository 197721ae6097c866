"""The ``prune`` stage: drives :mod:`deploykit.prune` to the recipe's target.

Targets: ``ratio`` (a fraction of channels, as torch-pruning defines it), ``macs_ratio`` (the
pruning ratio is bisected until the MACs land within ``tolerance``) and ``latency_ratio`` (the
MACs target is bisected on latency measured against the unpruned model on the named runtime).
Optional sparsity training first, ``steps`` rounds of prune -> fine-tune, a checkpoint with the
replayable pruning history, and a ``StageRecord``.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deploykit.bench import LatencyProbe
from deploykit.data import Loaders
from deploykit.errors import RecipeError
from deploykit.host import distributed
from deploykit.host.progress import log
from deploykit.models import count_macs_params, layer_widths, load_checkpoint, make_checkpoint
from deploykit.prune import (
    check_traceable,
    explain_macs_miss,
    ignored_layer_names,
    layers_to_leave_whole,
    macs_for_latency,
    make_pruner,
    prune_model,
    prune_to_macs,
    replay_pruning,
)
from deploykit.recipe import PruneSpec, SparsitySpec, TrainSpec
from deploykit.recipe.stages import stage_candidates
from deploykit.runfiles.atomic import save_torch
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.tasks import task_of
from deploykit.train import fit

__all__ = ["check", "run"]


def check(model: nn.Module, spec: PruneSpec, first_last: tuple[str, str],
          input_shape: tuple[int, int, int] | None = None) -> None:
    """Validate ``spec`` against ``model`` before any training starts; with ``input_shape``,
    also trace the model once with torch-pruning (a model it cannot prune fails here)."""
    ignored = ignored_layer_names(model, spec, first_last[1])
    if spec.target.latency_ratio is not None and distributed.world_size() > 1:
        raise RecipeError("prune target.latency_ratio times the model, and timings differ "
                          "between torchrun processes (so would their pruned models); use "
                          "macs_ratio under torchrun, or run the prune stage in one process")
    if input_shape is not None:
        check_traceable(model, torch.zeros(1, *input_shape), spec, ignored)


def run(state: PipelineState, loaders: Loaders, spec: PruneSpec) -> PipelineState:
    """Prune ``state.model`` to ``spec.target``, optionally sparsity-train first and fine-tune."""
    t0 = time.perf_counter()
    shape = state.input_shape
    ckpt_path = state.output_dir / "prune.pt"
    model = copy.deepcopy(state.model)
    ignored = ignored_layer_names(model, spec, state.first_last[1])
    whole = layers_to_leave_whole(model, torch.zeros(1, *shape))
    if whole:
        name, why = next(iter(whole.items()))
        log(f"prune: leaving {len(whole)} layers whole where torch-pruning cannot follow "
            f"their channels, e.g. {name}: {why}")
        ignored = sorted({*ignored, *whole})
    base_macs, base_params = count_macs_params(model, shape)
    if state.resume and ckpt_path.is_file():
        history, metrics = _restore(model, load_checkpoint(ckpt_path), shape)
        log(f"prune: resumed the finished stage from {ckpt_path}")
    else:
        model, history, metrics = _prune(state, model, loaders, spec, shape, ignored,
                                         base_macs)
    macs, params = count_macs_params(model, shape)
    if spec.target.macs_ratio is not None:
        miss = abs(macs / base_macs - spec.target.macs_ratio)
        metrics["macs_target_met"] = miss <= spec.target.tolerance
        if miss > spec.target.tolerance:
            last = metrics.get(f"round{spec.steps}_probes", [])   # aimed at the final target
            metrics["macs_target_miss"] = explain_macs_miss(last, base_macs, spec, ignored)
            log(f"prune: warning: reached {macs / base_macs:.3f}x MACs, not "
                f"{spec.target.macs_ratio}x +- {spec.target.tolerance}: "
                f"{metrics['macs_target_miss']}")
    if whole:
        metrics["left_whole"] = whole
    metrics.update(macs_before=base_macs, macs_after=macs, macs_ratio=macs / base_macs,
                   params_before=base_params, params_after=params, widths=layer_widths(model))
    arch = {"pruning_history": history}
    save_torch(make_checkpoint(model, arch, {"metrics": metrics}), ckpt_path)
    state.history.append(StageRecord("prune", spec.model_dump(mode="json", by_alias=True),
                                     metrics, time.perf_counter() - t0))
    top1 = metrics.get(f"finetune_{task_of(state).primary_metric}")
    name = stage_candidates(spec, state.candidates[-1].name)[-1]
    state.add_candidate(Candidate(name, model, torch_top1_pct=top1, arch=arch))
    log(f"prune: MACs {base_macs / 1e6:.2f} M -> {macs / 1e6:.2f} M ({macs / base_macs:.3f}x), "
        f"params {base_params / 1e6:.3f} M -> {params / 1e6:.3f} M")
    return state


def _prune(state: PipelineState, model: nn.Module, loaders: Loaders, spec: PruneSpec,
           shape: tuple[int, int, int], ignored: list[str], base_macs: int
           ) -> tuple[nn.Module, list[list[list[Any]]], dict[str, Any]]:
    """Sparsity training, then ``steps`` rounds of prune -> fine-tune; returns the pruned model.

    Each finished round is checkpointed (``checkpoints/prune-rounds/round<k>.pt``: weights,
    replayable history, metrics), so a resumed run continues after the last finished round
    instead of pruning again from the start.
    """
    metrics: dict[str, Any] = {}
    grads = [b for _, b in zip(range(spec.taylor_batches), loaders.train, strict=False)] \
        if spec.importance == "taylor" else None
    t = spec.target
    history: list[list[list[Any]]] = []
    rounds = state.output_dir / "checkpoints" / "prune-rounds"
    with tempfile.TemporaryDirectory() as tmp:  # one baseline export for every latency probe
        probe = None if t.latency_ratio is None else \
            LatencyProbe(model, shape, t.runtime, t.batch_size, t.threads, Path(tmp))
        done = _finished_round(rounds, spec.steps) if state.resume else None
        if done is not None:
            k_done, ck = done
            history, metrics = _restore(model, ck, shape)
            macs_ratio = ck["meta"]["macs_ratio_goal"]
            log(f"prune: resumed after round {k_done}/{spec.steps} from {rounds}")
        else:
            k_done = 0
            if spec.sparsity is not None:
                _sparsity_train(state, model, loaders, spec, spec.sparsity, ignored)
            macs_ratio = t.macs_ratio
            if probe is not None:
                macs_ratio, metrics["latency_probes"] = macs_for_latency(
                    model, shape, spec, ignored, base_macs, grads, probe.ratio)
        for k in range(k_done + 1, spec.steps + 1):
            if t.ratio is not None:  # cumulative channel ratio after round k
                step_ratio = 1 - (1 - t.ratio) ** (1 / spec.steps)
                hist = prune_model(model, torch.zeros(1, *shape), spec, ignored, step_ratio,
                                   grads)
            else:
                goal = int(base_macs * (macs_ratio or 1.0) ** (k / spec.steps))
                model, hist, probes = prune_to_macs(model, shape, spec, ignored, goal,
                                                    t.tolerance * base_macs, grads)
                metrics[f"round{k}_probes"] = probes
            history.append(hist)
            if spec.finetune is not None and spec.finetune.epochs > 0:
                task = task_of(state)
                res = fit(model, loaders.train, loaders.val, spec.finetune,
                          state.output_dir / "checkpoints" / f"prune-round{k}", state.resume,
                          desc=f"prune fine-tune {k}/{spec.steps}", objective=task.objective)
                metrics[f"finetune_{task.primary_metric}"] = res.final
                metrics["finetune_seconds"] = metrics.get("finetune_seconds", 0.0) + res.seconds
            if distributed.is_main():
                save_torch(make_checkpoint(model, {"pruning_history": history},
                                           {"metrics": metrics, "macs_ratio_goal": macs_ratio}),
                           rounds / f"round{k}.pt")
        if probe is not None:
            metrics["latency_ratio_measured"] = probe.ratio(model)
    return model, history, metrics


def _restore(model: nn.Module, ck: dict[str, Any], shape: tuple[int, int, int]
             ) -> tuple[list[list[list[Any]]], dict[str, Any]]:
    """Replay a prune checkpoint's history on ``model``, load its weights; return the history
    and the metrics it recorded."""
    replay_pruning(model, ck["arch"]["pruning_history"], shape)
    model.load_state_dict(ck["state_dict"])
    return ck["arch"]["pruning_history"], dict(ck["meta"]["metrics"])


def _finished_round(rounds: Path, steps: int) -> tuple[int, dict[str, Any]] | None:
    """The last round checkpoint of an interrupted prune stage, if any."""
    for k in range(steps, 0, -1):
        path = rounds / f"round{k}.pt"
        if path.is_file():
            return k, load_checkpoint(path)
    return None


def _sparsity_train(state: PipelineState, model: nn.Module, loaders: Loaders, spec: PruneSpec,
                    sp: SparsitySpec, ignored: list[str]) -> None:
    pruner = make_pruner(model, torch.zeros(1, *state.input_shape), spec,
                         [model.get_submodule(n) for n in ignored], 0.0, reg=sp.reg)
    train = TrainSpec(epochs=sp.epochs, lr=sp.lr, schedule="cosine")
    task = task_of(state)
    res = fit(model, loaders.train, loaders.val, train,
              state.output_dir / "checkpoints" / "prune-sparsity", state.resume,
              desc="sparsity training", after_backward=pruner.regularize,
              objective=task.objective)
    log(f"prune: sparsity training ({spec.importance}, lambda {sp.reg:g}) -> "
        f"val {task.primary_metric} {res.final:.2f}")
