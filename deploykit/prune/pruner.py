"""Structured channel pruning over torch-pruning's DepGraph: criteria, rounds and MACs targets.

Channels are physically removed (DepGraph keeps residual adds, concatenations and depthwise
convolutions consistent), so the exported ONNX model is smaller. :func:`prune_to_macs` bisects
torch-pruning's ratio until the pruned MACs land on a target; :func:`macs_for_latency` bisects
that target on a measured latency ratio, which the caller supplies (see
:class:`deploykit.bench.LatencyProbe`).
"""

from __future__ import annotations

import copy
import fnmatch
import math
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.errors import DeployKitError, ModelError, RecipeError
from deploykit.host.progress import log
from deploykit.models import count_macs_params
from deploykit.prune.groups import GroupsDoNotClose, bounded_groups, group_limit
from deploykit.prune.history import HistoryRound, fix_pruned_attributes
from deploykit.prune.opaque import (
    GraphDoesNotClose,
    layers_to_leave_whole,
    running_modules,
    tp_tracing,
    unmapped_reshapes,
)
from deploykit.recipe import PruneSpec

__all__ = ["check_traceable", "explain_macs_miss", "ignored_layer_names", "macs_for_latency",
           "make_pruner", "prune_model", "prune_to_macs"]

Batches = list[tuple[torch.Tensor, torch.Tensor]]

_BISECT_STEPS = 10


def ignored_layer_names(model: nn.Module, spec: PruneSpec, classifier: str) -> list[str]:
    """Names of the classifier plus every module matching a pattern of ``spec.ignored``.

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


def _round_to(model: nn.Module, round_to: int | None) -> int | None:
    heads = [m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not heads:
        return round_to
    return math.lcm(round_to or 1, *heads)  # keep embed dims divisible by the head count


def make_pruner(model: nn.Module, example: torch.Tensor, spec: PruneSpec,
                ignored: list[nn.Module], ratio: float, reg: float = 1e-4) -> Any:
    """torch-pruning's pruner for ``spec.importance`` at ``ratio``; ``reg`` is the strength of
    the sparsity regulariser of ``bn_scale`` and ``group_norm`` (``pruner.regularize``)."""
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
    with tp_tracing(model, example):   # sound because the caller ignores layers_to_leave_whole
        if spec.importance == "bn_scale":
            pruner = tp.pruner.BNScalePruner(model, example, reg=reg, **kwargs)
        elif spec.importance == "group_norm":
            pruner = tp.pruner.GroupNormPruner(model, example, reg=reg, **kwargs)
        else:
            pruner = tp.pruner.BasePruner(model, example, **kwargs)
    for method in ("step", "regularize"):   # they form groups: index mapping again
        setattr(pruner, method, _with_unmapped_reshapes(getattr(pruner, method)))
    return pruner


def _with_unmapped_reshapes(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        with unmapped_reshapes():
            return fn(*args, **kwargs)
    return call


# Where torch-pruning fails, what that means, for the error message.
_FAILURE_SITES = {
    "update_reshape_index_mapping": "a reshape/view that changes the channel count (a channel "
                                    "shuffle or pixel shuffle, as in ShuffleNet)",
    "update_concat_index_mapping": "a concatenation whose channel split it cannot infer",
    "update_split_index_mapping": "a split whose channel sizes it cannot infer",
}


def _site(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "torch_pruning" in f.filename] or frames
    name = ours[-1].name if ours else "?"
    return _FAILURE_SITES.get(name, f"torch-pruning's {name}")


def _cannot_trace(model: nn.Module, what: str) -> ModelError:
    return ModelError(
        f"prune: torch-pruning cannot trace {type(model).__name__}: {what}. Its channels cannot "
        "be removed consistently, so the run stops before any training. Fix: leave the prune "
        "stage out for this model (lowrank, distill and quantize still apply), or add the "
        "blocks involved to prune.ignored if the failure names one")


def check_traceable(model: nn.Module, example: torch.Tensor, spec: PruneSpec,
                    ignored_names: list[str]) -> dict[str, str]:
    """Build torch-pruning's dependency graph once, before any training; returns the layers
    to leave whole (:func:`layers_to_leave_whole`, name -> why).

    Raises:
        ModelError: torch-pruning raises while tracing, or its shape inference hits its
            recursion limit (on swin_t this preceded a grouping pass that grew past 24 GiB),
            naming the model, where it failed and the fix.
    """
    try:   # the graph alone first: the pruner would group it, which is what explodes
        whole = layers_to_leave_whole(model, example)
    except GraphDoesNotClose as e:
        raise _cannot_trace(model, f"its dependency graph does not close ({e}); grouping such "
                            "a graph grows without bound (swin_t passed 7 GiB and kept "
                            "growing)") from e
    except Exception as e:
        raise _cannot_trace(model, f"{type(e).__name__} ({e}) in {_site(e)}") from e
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if whole and all(n in whole or n in ignored_names for n in layers):
        name, why = next(iter(whole.items()))
        raise _cannot_trace(model, "every conv/linear layer must be left whole, so none can be "
                            f"pruned (e.g. {name}: {why}; a channel shuffle or a block "
                            "torch-pruning cannot see into)")
    # a trial prune of a copy: builds the pruner, prunes, and runs the pruned model (taylor
    # would need gradients; the trial is about structure, so it ranks by l1 instead)
    trial = spec if spec.importance != "taylor" else spec.model_copy(update={"importance": "l1"})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prune_model(copy.deepcopy(model), example, trial, sorted({*ignored_names, *whole}),
                        0.3)
    except ModelError:
        raise
    except Exception as e:   # raised while building the pruner
        raise _cannot_trace(model, f"{type(e).__name__} ({e}) in {_site(e)}") from e
    return whole


def _taylor_grads(model: nn.Module, batches: Batches) -> None:
    model.zero_grad(set_to_none=True)
    model.eval()
    for x, y in batches:
        F.cross_entropy(model(x), y).backward()


def prune_model(model: nn.Module, example: torch.Tensor, spec: PruneSpec,
                ignored_names: list[str], ratio: float, grad_batches: Batches | None = None
                ) -> HistoryRound:
    """Prune ``model`` in place at torch-pruning ``ratio``; return the round's history."""
    ignored = [model.get_submodule(n) for n in ignored_names]
    try:
        with bounded_groups(group_limit(model)):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
                pruner = make_pruner(model, example, spec, ignored, ratio)
            if spec.importance == "taylor":
                _taylor_grads(model, grad_batches or [])
            pruner.step()
    except GroupsDoNotClose as e:
        raise _cannot_trace(model, f"{e}; add {e.root} (or its block) to prune.ignored, "
                            "and the blocks after it if the next run names them") from e
    except DeployKitError:
        raise
    except Exception as e:
        raise _cannot_trace(model, f"pruning failed with {type(e).__name__} ({e}) in "
                            f"{_site(e)}") from e
    model.zero_grad(set_to_none=True)
    fix_pruned_attributes(model)
    _check_pruned_forward(model, example)
    return [[n, bool(o), [int(i) for i in idx]] for n, o, idx in pruner.pruning_history()]


def _check_pruned_forward(model: nn.Module, example: torch.Tensor) -> None:
    """Run the pruned model once; a module that keeps channel counts of its own (split sizes,
    a reshape to a stored width) fails here, and is named."""
    with running_modules(model) as running:
        try:
            with torch.no_grad():
                model(example)
        except Exception as e:
            where, module = running[-1] if running else ("", model)
            site = f"{where} ({type(module).__name__})" if where else "the model itself"
            raise ModelError(
                f"prune: after pruning, {type(model).__name__}'s forward fails in {site} with "
                f"{type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}. That module keeps channel counts of its own "
                "that torch-pruning does not update. Fix: add it to prune.ignored (with the "
                "layers that feed it), or leave the prune stage out for this model") from e


def _macs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    return count_macs_params(model, shape)[0]


def prune_to_macs(model: nn.Module, shape: tuple[int, int, int], spec: PruneSpec,
                  ignored_names: list[str], macs_target: int, tolerance_macs: float,
                  grad_batches: Batches | None = None
                  ) -> tuple[nn.Module, HistoryRound, list[dict[str, float]]]:
    """Bisect the pruning ratio so the pruned copy's MACs land closest to ``macs_target``.

    Stops early once within half of ``tolerance_macs``. Returns the pruned copy, its
    history, and the probes tried (ratio, MACs).
    """
    example = torch.zeros(1, *shape)
    lo, hi = 0.0, spec.max_layer_ratio
    best: tuple[float, nn.Module, HistoryRound] | None = None
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


def explain_macs_miss(probes: list[dict[str, float]], base_macs: int, spec: PruneSpec,
                      ignored: list[str]) -> str:
    """Why the MACs bisection could not land on ``spec.target.macs_ratio``, and what to change,
    from the probes it tried (``pruning_ratio``, ``macs``)."""
    want = spec.target.macs_ratio or 1.0
    ratios = sorted(p["macs"] / base_macs for p in probes)
    if ratios and ratios[0] > want:
        return (f"even at the largest ratio tried every prunable layer keeps {ratios[0]:.3f}x "
                f"of the MACs: max_layer_ratio {spec.max_layer_ratio} and the layers left whole "
                f"({', '.join(ignored[:4])}{' ...' if len(ignored) > 4 else ''}) bound it; "
                "raise max_layer_ratio or ignore fewer layers")
    if ratios and ratios[-1] < want:
        return (f"even the smallest ratio tried already removes too much ({ratios[-1]:.3f}x): "
                f"with round_to {spec.round_to} every prunable layer loses at least one "
                "multiple; lower round_to or set global: true for finer steps")
    below = max((r for r in ratios if r <= want), default=None)
    above = min((r for r in ratios if r >= want), default=None)
    return (f"the model's widths move in coarse steps here (probes landed at {below:.3f}x and "
            f"{above:.3f}x around it; round_to {spec.round_to}): lower round_to, set global: "
            "true, or widen target.tolerance")


def macs_for_latency(model: nn.Module, shape: tuple[int, int, int], spec: PruneSpec,
                     ignored: list[str], base_macs: int, grads: Batches | None,
                     latency_ratio: Callable[[nn.Module], float]
                     ) -> tuple[float, list[dict[str, float]]]:
    """Bisect the MACs ratio on measured latency; return the largest MACs ratio that meets
    ``spec.target.latency_ratio``, and the probes.

    Args:
        latency_ratio: a pruned copy's latency over the unpruned model's, measured on the
            target runtime (e.g. :meth:`deploykit.bench.LatencyProbe.ratio`).
    """
    target = spec.target.latency_ratio or 1.0
    lo, hi = 0.02, 1.0
    best = lo
    probes = []
    for _ in range(6):
        mid = (lo + hi) / 2
        cand, _, _ = prune_to_macs(model, shape, spec, ignored, int(mid * base_macs),
                                   spec.target.tolerance * base_macs, grads)
        macs_ratio = _macs(cand, shape) / base_macs
        lat = latency_ratio(cand)
        probes.append({"macs_ratio": macs_ratio, "latency_ratio": lat})
        log(f"prune: {macs_ratio:.3f}x MACs -> {lat:.3f}x latency "
            f"({spec.target.runtime}, batch {spec.target.batch_size})")
        if lat <= target:
            best, lo = mid, mid
        else:
            hi = mid
    return best, probes
