"""Layers to leave whole around reshapes torch-pruning cannot map (channel shuffle).

ShuffleNet mixes channels by reshape -> transpose -> reshape. torch-pruning maps channel
indices through a reshape only when it flattens; on a channel shuffle its shape inference finds
no channel count and its index mapping divides by zero. The layers whose channels pass through
such a reshape cannot be pruned consistently; every other layer can (in ShuffleNet, the inner
1x1 -> depthwise -> 1x1 channels of each block). :func:`layers_to_leave_whole` finds the former;
within :func:`reshape_guard` torch-pruning builds its graph without mapping those reshapes, so
the rest can be pruned, with the former passed as ignored layers.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["GraphDoesNotClose", "layers_to_leave_whole", "reshape_guard"]


class GraphDoesNotClose(Exception):
    """torch-pruning's shape inference hit its recursion limit ``count`` times (swin_t):
    forming groups on that graph grows without bound."""

    def __init__(self, count: int):
        super().__init__(f"shape inference hit torch-pruning's recursion limit {count} times")
        self.count = count


@contextlib.contextmanager
def reshape_guard(skipped: list[object] | None = None) -> Iterator[list[object]]:
    """Within this block, a reshape whose channel mapping torch-pruning cannot compute
    (ZeroDivisionError) is left unmapped and appended to the yielded list, instead of
    aborting the graph. Only sound when the layers of :func:`layers_to_leave_whole` are
    ignored: the groups through such a reshape are wrong."""
    from torch_pruning.dependency import index_mapping

    skipped = [] if skipped is None else skipped
    original = index_mapping.update_reshape_index_mapping

    def guarded(graph: object, node: object) -> None:
        try:
            original(graph, node)
        except ZeroDivisionError:
            skipped.append(node)

    index_mapping.update_reshape_index_mapping = guarded
    try:
        yield skipped
    finally:
        index_mapping.update_reshape_index_mapping = original


_RESHAPES = {"view", "reshape", "flatten", "unflatten"}


class _ReshapeRecorder(TorchFunctionMode):
    """Records the autograd node of every reshape that moves the channel axis's contents:
    the batch and channel sizes change, and it is not a flatten of everything but the batch
    (which torch-pruning maps)."""

    def __init__(self) -> None:
        super().__init__()
        self.mixing: set[object] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        x = args[0] if args else None
        if (name in _RESHAPES and isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor)
                and x.dim() >= 3 and out.grad_fn is not None):
            flatten = out.dim() == 2 and out.shape[1] == x[0].numel()
            if tuple(out.shape[:2]) != tuple(x.shape[:2]) and not flatten:
                self.mixing.add(out.grad_fn)
        return out


def layers_to_leave_whole(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """Conv/linear layers (name -> why) whose channel group passes through a reshape that
    mixes channels (:class:`_ReshapeRecorder`) or one torch-pruning cannot map; empty when
    the model has none. A group torch-pruning cannot even form around such a reshape is left
    whole too.

    Raises:
        GraphDoesNotClose: before forming any group, when the graph does not close.
    """
    import torch_pruning as tp

    recorder = _ReshapeRecorder()
    with reshape_guard() as skipped:
        with recorder, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")   # during torch-pruning's own forward: the same
            graph = tp.DependencyGraph().build_dependency(model, example)   # autograd nodes
        deep = sum("Maximum recursive depth" in str(w.message) for w in caught)
        if deep:   # grouping such a graph is what grows without bound: stop before it
            raise GraphDoesNotClose(deep)
        opaque = {n for n in graph.module2node.values()
                  if n.type == tp.ops.OPTYPE.RESHAPE and n.grad_fn in recorder.mixing}
        return _whole(model, graph, {*opaque, *skipped}) if opaque or skipped else {}


def _whole(model: nn.Module, graph: object, reshapes: set[object]) -> dict[str, str]:
    whole: dict[str, str] = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)) or layer not in graph.module2node:
            continue
        pruner = graph.get_pruner_of_module(layer)
        try:
            group = graph.get_pruning_group(layer, pruner.prune_out_channels,
                                            list(range(pruner.get_out_channels(layer))))
        except Exception as e:   # a group whose channel sizes the unmapped reshape broke
            whole[name] = f"its channels reach a channel-mixing reshape ({type(e).__name__})"
            continue
        if any(dep.source in reshapes or dep.target in reshapes for dep, _ in group):
            whole[name] = "its channels pass through a channel-mixing reshape"
    return whole
