"""The ``prune`` stage: drives :mod:`deploykit.prune` to the recipe's target.

Targets: ``ratio`` (a fraction of channels, as torch-pruning defines it), ``macs_ratio`` (the
pruning ratio is bisected until the MACs land within ``tolerance``) and ``latency_ratio`` (the
MACs target is bisected on latency measured against the unpruned model on the named runtime).
Optional sparsity training first, ``steps`` rounds of prune -> fine-tune, a checkpoint with the
replayable pruning history, and a ``StageRecord``.

What is pruned is the task's graphs (:meth:`deploykit.tasks.Task.graphs`): a classifier whole,
its classifier's outputs kept; a detector's network, its prediction convs' outputs kept, and a
two-stage detector's box head, each to the same target. Latency targets, sparsity training
and the gradient or BatchNorm criteria prune the first graph (the task's recipe checks refuse
them where it has more).
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
)
from deploykit.recipe import PruneSpec, SparsitySpec, TrainSpec
from deploykit.recipe.stages import stage_candidates
from deploykit.runfiles.atomic import save_torch
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.tasks import Graph, Task, get_task, replay_graphs, task_of
from deploykit.train import fit

__all__ = ["check", "run"]


def _ignored(graph: Graph, spec: PruneSpec) -> list[str]:
    """The graph's layers kept whole, plus the recipe's ``ignored`` patterns where they name
    its layers (each pattern must match)."""
    names = ignored_layer_names(graph.module, spec, graph.keep_whole[0]) \
        if graph.user_patterns and graph.keep_whole else []
    return sorted({*names, *graph.keep_whole})


def check(model: nn.Module, spec: PruneSpec, first_last: tuple[str, str],
          input_shape: tuple[int, int, int] | None = None, task: Task | None = None) -> None:
    """Validate ``spec`` against ``model`` before any training starts; with ``input_shape``,
    also trace each of the task's graphs once with torch-pruning (a model it cannot prune
    fails here)."""
    task = task or get_task("classification")
    if spec.target.latency_ratio is not None and distributed.world_size() > 1:
        raise RecipeError("prune target.latency_ratio times the model, and timings differ "
                          "between torchrun processes (so would their pruned models); use "
                          "macs_ratio under torchrun, or run the prune stage in one process")
    shape = input_shape or (3, 8, 8)   # the graphs' own shapes do not need the model's
    for graph in task.graphs(model, shape, first_last):
        ignored = _ignored(graph, spec)
        if input_shape is not None:
            check_traceable(graph.module, torch.zeros(1, *graph.input_shape), spec, ignored)


def run(state: PipelineState, loaders: Loaders, spec: PruneSpec) -> PipelineState:
    """Prune a copy of ``state.model`` to ``spec.target``, optionally sparsity-train first and
    fine-tune; add the candidate."""
    t0 = time.perf_counter()
    task = task_of(state)
    shape = state.input_shape
    ckpt_path = state.output_dir / "prune.pt"
    model = copy.deepcopy(state.model)
    graphs = task.graphs(model, shape, state.first_last)
    ignored, whole = [], []
    for graph in graphs:
        found = layers_to_leave_whole(graph.module, torch.zeros(1, *graph.input_shape)) \
            if graph.find_opaque else {}
        if found:
            name, why = next(iter(found.items()))
            log(f"prune: leaving {len(found)} layers whole where torch-pruning cannot follow "
                f"their channels, e.g. {name}: {why}")
        ignored.append(sorted({*_ignored(graph, spec), *found}))
        whole.append(found)
    base = [_cost(g) for g in graphs]
    if state.resume and ckpt_path.is_file():
        history, metrics = _restore(task, model, load_checkpoint(ckpt_path), state)
        log(f"prune: resumed the finished stage from {ckpt_path}")
    else:
        model, history, metrics = _prune(state, model, loaders, spec, ignored, base)
    graphs = task.graphs(model, shape, state.first_last)
    for graph, (base_macs, base_params), found, ign in zip(graphs, base, whole, ignored,
                                                         strict=True):
        p = graph.prefix
        macs, params = _cost(graph)
        if spec.target.macs_ratio is not None:
            miss = abs(macs / base_macs - spec.target.macs_ratio)
            metrics[f"{p}macs_target_met"] = miss <= spec.target.tolerance
            if miss > spec.target.tolerance:
                last = metrics.get(f"{p}round{spec.steps}_probes", [])   # the final target's
                metrics[f"{p}macs_target_miss"] = explain_macs_miss(
                    last, base_macs // graph.runs_per_input, spec, ign)
                log(f"prune: warning: {p}MACs reached {macs / base_macs:.3f}x, not "
                    f"{spec.target.macs_ratio}x +- {spec.target.tolerance}: "
                    f"{metrics[f'{p}macs_target_miss']}")
        if found:
            metrics[f"{p}left_whole"] = found
        metrics.update({f"{p}macs_before": base_macs, f"{p}macs_after": macs,
                        f"{p}macs_ratio": macs / base_macs, f"{p}params_before": base_params,
                        f"{p}params_after": params, f"{p}widths": layer_widths(graph.module)})
        runs = f" over {graph.runs_per_input} runs per input" if graph.runs_per_input > 1 else ""
        log(f"prune: {p}MACs{runs} {base_macs / 1e6:.2f} M -> {macs / 1e6:.2f} M "
            f"({macs / base_macs:.3f}x), params {base_params / 1e6:.3f} M -> "
            f"{params / 1e6:.3f} M")
    metric = task.primary_metric
    if f"finetune_{metric}" not in metrics and f"{metric}" not in metrics:
        metrics[metric] = task.evaluate(model, loaders.val)[metric]
    arch = _arch(task, model, state, history)
    save_torch(make_checkpoint(model, arch, {"metrics": metrics}), ckpt_path)
    state.history.append(StageRecord("prune", spec.model_dump(mode="json", by_alias=True),
                                     metrics, time.perf_counter() - t0))
    name = stage_candidates(spec, state.candidates[-1].name)[-1]
    state.add_candidate(Candidate(name, model, arch=arch, torch_top1_pct=metrics.get(
        f"finetune_{metric}", metrics.get(metric))))
    return state


def _cost(graph: Graph) -> tuple[int, int]:
    """MACs (over all the runs per model input) and parameters of ``graph``."""
    macs, params = count_macs_params(graph.module, graph.input_shape)
    return macs * graph.runs_per_input, params


def _prune(state: PipelineState, model: nn.Module, loaders: Loaders, spec: PruneSpec,
           ignored: list[list[str]], base: list[tuple[int, int]]
           ) -> tuple[nn.Module, list[list[list[list[Any]]]], dict[str, Any]]:
    """Sparsity training, then ``steps`` rounds of prune (each graph) -> fine-tune; returns
    the pruned model, each graph's history and the metrics.

    Each finished round is checkpointed (``checkpoints/prune-rounds/round<k>.pt``: weights,
    replayable history, metrics), so a resumed run continues after the last finished round
    instead of pruning again from the start.
    """
    task = task_of(state)
    metrics: dict[str, Any] = {}
    grads = [b for _, b in zip(range(spec.taylor_batches), loaders.train, strict=False)] \
        if spec.importance == "taylor" else None
    t = spec.target
    first = task.graphs(model, state.input_shape, state.first_last)[0]
    history: list[list[list[list[Any]]]] = [[] for _ in base]
    rounds = state.output_dir / "checkpoints" / "prune-rounds"
    with tempfile.TemporaryDirectory() as tmp:  # one baseline export for every latency probe
        probe = None if t.latency_ratio is None else \
            LatencyProbe(first.module, first.input_shape, t.runtime, t.batch_size, t.threads,
                         Path(tmp))
        done = _finished_round(rounds, spec.steps) if state.resume else None
        if done is not None:
            k_done, ck = done
            history, metrics = _restore(task, model, ck, state)
            macs_ratio = ck["meta"]["macs_ratio_goal"]
            log(f"prune: resumed after round {k_done}/{spec.steps} from {rounds}")
        else:
            k_done = 0
            if spec.sparsity is not None:
                _sparsity_train(state, first.module, model, loaders, spec, spec.sparsity,
                                ignored[0])
            macs_ratio = t.macs_ratio
            if probe is not None:
                macs_ratio, metrics["latency_probes"] = macs_for_latency(
                    first.module, first.input_shape, spec, ignored[0], base[0][0], grads,
                    probe.ratio)
        for k in range(k_done + 1, spec.steps + 1):
            for i in range(len(base)):   # a later graph is read from the model as it is now
                graph = task.graphs(model, state.input_shape, state.first_last)[i]
                shape, p = graph.input_shape, graph.prefix
                if t.ratio is not None:  # cumulative channel ratio after round k
                    step_ratio = 1 - (1 - t.ratio) ** (1 / spec.steps)
                    pruned = graph.module
                    hist = prune_model(pruned, torch.zeros(1, *shape), spec, ignored[i],
                                       step_ratio, grads if i == 0 else None)
                else:
                    per_run = base[i][0] // graph.runs_per_input
                    goal = int(per_run * (macs_ratio or 1.0) ** (k / spec.steps))
                    pruned, hist, probes = prune_to_macs(graph.module, shape, spec, ignored[i],
                                                         goal, t.tolerance * per_run,
                                                         grads if i == 0 else None)
                    metrics[f"{p}round{k}_probes"] = probes
                model = graph.put_back(model, pruned)
                history[i].append(hist)
            if spec.finetune is not None and spec.finetune.epochs > 0:
                res = fit(model, loaders.train, loaders.val, spec.finetune,
                          state.output_dir / "checkpoints" / f"prune-round{k}", state.resume,
                          desc=f"prune fine-tune {k}/{spec.steps}", objective=task.objective)
                metrics[f"finetune_{task.primary_metric}"] = res.final
                metrics["finetune_seconds"] = metrics.get("finetune_seconds", 0.0) + res.seconds
            if distributed.is_main():
                save_torch(make_checkpoint(model, _arch(task, model, state, history),
                                           {"metrics": metrics, "macs_ratio_goal": macs_ratio}),
                           rounds / f"round{k}.pt")
        if probe is not None:
            metrics["latency_ratio_measured"] = probe.ratio(
                task.graphs(model, state.input_shape, state.first_last)[0].module)
    return model, history, metrics


def _arch(task: Task, model: nn.Module, state: PipelineState,
          history: list[list[list[list[Any]]]]) -> dict[str, Any]:
    graphs = task.graphs(model, state.input_shape, state.first_last)
    return {g.history_key: h for g, h in zip(graphs, history, strict=True)}


def _restore(task: Task, model: nn.Module, ck: dict[str, Any], state: PipelineState
             ) -> tuple[list[list[list[list[Any]]]], dict[str, Any]]:
    """Replay a prune checkpoint's histories on ``model``'s graphs (in place), load its
    weights; return each graph's history and the metrics it recorded."""
    history = replay_graphs(task.graphs(model, state.input_shape, state.first_last), ck["arch"])
    model.load_state_dict(ck["state_dict"])
    return history, dict(ck["meta"]["metrics"])


def _finished_round(rounds: Path, steps: int) -> tuple[int, dict[str, Any]] | None:
    """The last round checkpoint of an interrupted prune stage, if any."""
    for k in range(steps, 0, -1):
        path = rounds / f"round{k}.pt"
        if path.is_file():
            return k, load_checkpoint(path)
    return None


def _sparsity_train(state: PipelineState, graph: nn.Module, model: nn.Module, loaders: Loaders,
                    spec: PruneSpec, sp: SparsitySpec, ignored: list[str]) -> None:
    pruner = make_pruner(graph, torch.zeros(1, *state.input_shape), spec,
                         [graph.get_submodule(n) for n in ignored], 0.0, reg=sp.reg)
    train = TrainSpec(epochs=sp.epochs, lr=sp.lr, schedule="cosine")
    task = task_of(state)
    res = fit(model, loaders.train, loaders.val, train,
              state.output_dir / "checkpoints" / "prune-sparsity", state.resume,
              desc="sparsity training", after_backward=pruner.regularize,
              objective=task.objective)
    log(f"prune: sparsity training ({spec.importance}, lambda {sp.reg:g}) -> "
        f"val {task.primary_metric} {res.final:.2f}")
