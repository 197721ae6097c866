"""The ``prune`` stage: structured channel pruning over torch-pruning's DepGraph.

Channels are physically removed (DepGraph keeps residual adds, concatenations and depthwise
convolutions consistent), so the exported ONNX model is smaller. Targets:

- ``ratio``: a fraction of channels, as torch-pruning defines it;
- ``macs_ratio``: the pruning ratio is bisected until the pruned MACs land within
  ``tolerance`` of the target;
- ``latency_ratio``: the MACs target is bisected on *measured* latency (export, time against
  the unpruned model alternately on the named runtime) until the target is reached.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deploykit._io import save_torch
from deploykit.arch import fix_pruned_attributes, layer_widths, replay_pruning
from deploykit.bench.cost import count_macs_params
from deploykit.data import Loaders
from deploykit.errors import RecipeError
from deploykit.models import load_checkpoint, make_checkpoint
from deploykit.progress import log
from deploykit.spec_base import TrainSpec
from deploykit.stage_specs import PruneSpec, SparsitySpec
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.train import fit

__all__ = ["check", "prune_model", "run"]

_BISECT_STEPS = 10


def _ignored_names(model: nn.Module, spec: PruneSpec, classifier: str) -> list[str]:
    """Names of the classifier plus every module matching a user pattern.

    Raises:
        RecipeError: a pattern matches no module.
    """
    names = [n for n, _ in model.named_modules() if n]
    chosen = {classifier}
    for pattern in spec.ignored:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise RecipeError(f"stages[prune].ignored: pattern {pattern!r} matches no module; "
                              f"module names look like {names[:3]} "
                              "(see deploykit inspect MODEL)")
        chosen.update(hits)
    return sorted(chosen)


def check(model: nn.Module, spec: PruneSpec, first_last: tuple[str, str]) -> None:
    """Validate ``spec`` against ``model`` before any training starts."""
    _ignored_names(model, spec, first_last[1])
    from deploykit import distributed

    if spec.target.latency_ratio is not None and distributed.world_size() > 1:
        raise RecipeError("prune target.latency_ratio times the model, and timings differ "
                          "between torchrun processes (so would their pruned models); use "
                          "macs_ratio under torchrun, or run the prune stage in one process")


def _round_to(model: nn.Module, round_to: int | None) -> int | None:
    heads = [m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not heads:
        return round_to
    return math.lcm(round_to or 1, *heads)  # keep embed dims divisible by the head count


def _make_pruner(model: nn.Module, example: torch.Tensor, spec: PruneSpec,
                 ignored: list[nn.Module], ratio: float, reg: float = 1e-4) -> Any:
    import torch_pruning as tp

    imp = tp.importance
    importance = {
        "l1": lambda: imp.GroupMagnitudeImportance(p=1),
        "l2": lambda: imp.GroupMagnitudeImportance(p=2),
        "bn_scale": imp.BNScaleImportance,
        "taylor": imp.GroupTaylorImportance,
        "group_norm": lambda: imp.GroupMagnitudeImportance(p=2),
        "random": imp.RandomImportance,
    }[spec.importance]()
    kwargs: dict[str, Any] = {
        "importance": importance, "pruning_ratio": ratio, "global_pruning": spec.global_ranking,
        "max_pruning_ratio": spec.max_layer_ratio, "ignored_layers": ignored,
        "round_to": _round_to(model, spec.round_to),
    }
    mha = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    if mha:
        kwargs.update(num_heads=mha, prune_head_dims=True, prune_num_heads=False)
    if spec.importance == "bn_scale":
        return tp.pruner.BNScalePruner(model, example, reg=reg, **kwargs)
    if spec.importance == "group_norm":
        return tp.pruner.GroupNormPruner(model, example, reg=reg, **kwargs)
    return tp.pruner.BasePruner(model, example, **kwargs)


def _taylor_grads(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    model.zero_grad(set_to_none=True)
    model.eval()
    for x, y in batches:
        F.cross_entropy(model(x), y).backward()


def prune_model(model: nn.Module, example: torch.Tensor, spec: PruneSpec,
                ignored_names: list[str], ratio: float,
                grad_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                ) -> list[list[Any]]:
    """Prune ``model`` in place at torch-pruning ``ratio``; return the round's history."""
    ignored = [model.get_submodule(n) for n in ignored_names]
    pruner = _make_pruner(model, example, spec, ignored, ratio)
    if spec.importance == "taylor":
        _taylor_grads(model, grad_batches or [])
    pruner.step()
    model.zero_grad(set_to_none=True)
    fix_pruned_attributes(model)
    return [[n, bool(o), [int(i) for i in idx]] for n, o, idx in pruner.pruning_history()]


def _macs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    return count_macs_params(model, shape)[0]


def prune_to_macs(model: nn.Module, shape: tuple[int, int, int], spec: PruneSpec,
                  ignored_names: list[str], macs_target: int, tolerance_macs: float,
                  grad_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                  ) -> tuple[nn.Module, list[list[Any]], list[dict[str, float]]]:
    """Bisect the pruning ratio so the pruned copy's MACs land closest to ``macs_target``.

    Stops early once within half of ``tolerance_macs``. Returns the pruned copy, its
    history, and the probes tried (ratio, MACs).
    """
    example = torch.zeros(1, *shape)
    lo, hi = 0.0, spec.max_layer_ratio
    best: tuple[float, nn.Module, list[list[Any]]] | None = None
    probes = []
    for _ in range(_BISECT_STEPS):
        ratio = (lo + hi) / 2
        cand = copy.deepcopy(model)
        hist = prune_model(cand, example, spec, ignored_names, ratio, grad_batches)
        macs = _macs(cand, shape)
        probes.append({"pruning_ratio": ratio, "macs": macs})
        err = abs(macs - macs_target)
        if best is None or err < best[0]:
            best = (err, cand, hist)
        if err <= tolerance_macs / 2:
            break
        lo, hi = (ratio, hi) if macs > macs_target else (lo, ratio)
    return best[1], best[2], probes  # type: ignore[index]  (the loop ran at least once)


class _LatencyProbe:
    """Times candidates against the unpruned model on the target runtime, alternately.

    The baseline is exported and loaded once; each candidate is exported to ``workdir``.
    """

    def __init__(self, base: nn.Module, shape: tuple[int, int, int], spec: PruneSpec,
                 workdir: Path) -> None:
        import numpy as np

        self.shape, self.target, self.workdir = shape, spec.target, workdir
        self.x = np.random.default_rng(0).standard_normal((self.target.batch_size, *shape),
                                                          dtype=np.float32)
        self.base = self._runner(base, "base")

    def _runner(self, model: nn.Module, name: str) -> Any:
        from deploykit.bench.runners import make_runner
        from deploykit.export.onnx import export_onnx

        path = None
        if self.target.runtime == "onnxruntime-cpu":
            path = export_onnx(model, self.shape, self.workdir / f"{name}.onnx")
        return make_runner(self.target.runtime, model, path, self.target.threads)

    def ratio(self, cand: nn.Module) -> float:
        """Median latency of ``cand`` over the baseline's."""
        from deploykit.bench.latency import time_alternating

        runners = {"base": self.base, "cand": self._runner(cand, "cand")}
        stats = time_alternating({k: (lambda r=r: r(self.x)) for k, r in runners.items()},
                                 self.target.batch_size, iterations=40, warmup=5)
        return stats["cand"].p50_ms / stats["base"].p50_ms


def _macs_for_latency(model: nn.Module, shape: tuple[int, int, int], spec: PruneSpec,
                      ignored: list[str], base_macs: int,
                      grads: list[tuple[torch.Tensor, torch.Tensor]] | None,
                      probe: _LatencyProbe) -> tuple[float, list[dict[str, float]]]:
    """Bisect the MACs ratio on measured latency; return the largest MACs ratio that meets it."""
    target = spec.target.latency_ratio or 1.0
    lo, hi = 0.02, 1.0
    best = lo
    probes = []
    for _ in range(6):
        mid = (lo + hi) / 2
        cand, _, _ = prune_to_macs(model, shape, spec, ignored, int(mid * base_macs),
                                   spec.target.tolerance * base_macs, grads)
        macs_ratio = _macs(cand, shape) / base_macs
        lat = probe.ratio(cand)
        probes.append({"macs_ratio": macs_ratio, "latency_ratio": lat})
        log(f"prune: {macs_ratio:.3f}x MACs -> {lat:.3f}x latency "
            f"({spec.target.runtime}, batch {spec.target.batch_size})")
        if lat <= target:
            best, lo = mid, mid
        else:
            hi = mid
    return best, probes


def run(state: PipelineState, loaders: Loaders, spec: PruneSpec) -> PipelineState:
    """Prune ``state.model`` to ``spec.target``, optionally sparsity-train first and fine-tune."""
    t0 = time.perf_counter()
    shape = state.input_shape
    ckpt_path = state.output_dir / "prune.pt"
    model = copy.deepcopy(state.model)
    ignored = _ignored_names(model, spec, state.first_last[1])
    base_macs, base_params = count_macs_params(model, shape)
    if state.resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        replay_pruning(model, ck["arch"]["pruning_history"], shape)
        model.load_state_dict(ck["state_dict"])
        log(f"prune: resumed the finished stage from {ckpt_path}")
        history, metrics = ck["arch"]["pruning_history"], dict(ck["meta"]["metrics"])
    else:
        model, history, metrics = _prune(state, model, loaders, spec, shape, ignored, base_macs)
    macs, params = count_macs_params(model, shape)
    if spec.target.macs_ratio is not None:
        miss = abs(macs / base_macs - spec.target.macs_ratio)
        metrics["macs_target_met"] = miss <= spec.target.tolerance
        if miss > spec.target.tolerance:
            log(f"prune: warning: reached {macs / base_macs:.3f}x MACs, not "
                f"{spec.target.macs_ratio}x +- {spec.target.tolerance}: with round_to "
                f"{spec.round_to} this model's widths move in coarse steps; lower round_to "
                "or set global: true for finer control")
    metrics.update(macs_before=base_macs, macs_after=macs, macs_ratio=macs / base_macs,
                   params_before=base_params, params_after=params, widths=layer_widths(model))
    arch = {"pruning_history": history}
    save_torch(make_checkpoint(model, arch, {"metrics": metrics}), ckpt_path)
    state.history.append(StageRecord("prune", spec.model_dump(mode="json", by_alias=True),
                                     metrics, time.perf_counter() - t0))
    top1 = metrics.get("finetune_top1_pct")
    state.add_candidate(Candidate("prune", model, torch_top1_pct=top1, arch=arch))
    log(f"prune: MACs {base_macs / 1e6:.2f} M -> {macs / 1e6:.2f} M ({macs / base_macs:.3f}x), "
        f"params {base_params / 1e6:.3f} M -> {params / 1e6:.3f} M")
    return state


def _prune(state: PipelineState, model: nn.Module, loaders: Loaders, spec: PruneSpec,
           shape: tuple[int, int, int], ignored: list[str], base_macs: int
           ) -> tuple[nn.Module, list[list[list[Any]]], dict[str, Any]]:
    """Sparsity training, then ``steps`` rounds of prune -> fine-tune; returns the pruned model."""
    metrics: dict[str, Any] = {}
    grads = [b for _, b in zip(range(spec.taylor_batches), loaders.train, strict=False)] \
        if spec.importance == "taylor" else None
    if spec.sparsity is not None:
        _sparsity_train(state, model, loaders, spec, spec.sparsity, ignored)
    t = spec.target
    history: list[list[list[Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:  # one baseline export for every latency probe
        probe = _LatencyProbe(model, shape, spec, Path(tmp)) if t.latency_ratio else None
        macs_ratio = t.macs_ratio
        if probe is not None:
            macs_ratio, metrics["latency_probes"] = _macs_for_latency(
                model, shape, spec, ignored, base_macs, grads, probe)
        for k in range(1, spec.steps + 1):
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
                res = fit(model, loaders.train, loaders.val, spec.finetune,
                          state.output_dir / "checkpoints" / f"prune-round{k}", state.resume,
                          desc=f"prune fine-tune {k}/{spec.steps}")
                metrics["finetune_top1_pct"] = res.final_top1_pct
                metrics["finetune_seconds"] = metrics.get("finetune_seconds", 0.0) + res.seconds
        if probe is not None:
            metrics["latency_ratio_measured"] = probe.ratio(model)
    return model, history, metrics


def _sparsity_train(state: PipelineState, model: nn.Module, loaders: Loaders, spec: PruneSpec,
                    sp: SparsitySpec, ignored: list[str]) -> None:
    pruner = _make_pruner(model, torch.zeros(1, *state.input_shape), spec,
                          [model.get_submodule(n) for n in ignored], 0.0, reg=sp.reg)
    train = TrainSpec(epochs=sp.epochs, lr=sp.lr, schedule="cosine")
    res = fit(model, loaders.train, loaders.val, train,
              state.output_dir / "checkpoints" / "prune-sparsity", state.resume,
              desc="sparsity training", after_backward=pruner.regularize)
    log(f"prune: sparsity training ({spec.importance}, lambda {sp.reg:g}) -> "
        f"val top-1 {res.final_top1_pct:.2f}%")
