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
    the model has none.

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
    nodes = graph.module2node
    return {name: "its channels pass through a channel-mixing reshape"
            for name, layer in model.named_modules()
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and layer in nodes
            and _reaches(nodes[layer], reshapes)}


def _blocks_channels(node: object) -> bool:
    """A layer whose input and output channels are independent (stops the coupling): a
    conv (not depthwise), a linear layer, an attention block."""
    m = node.module
    if isinstance(m, nn.Conv2d):
        return not (m.groups > 1 and m.groups == m.in_channels == m.out_channels)
    return isinstance(m, (nn.Linear, nn.MultiheadAttention))


def _reaches(start: object, reshapes: set[object]) -> bool:
    """Whether ``start``'s output channels are coupled to one of ``reshapes``.

    A walk over torch-pruning's graph instead of its pruning groups: those track channel
    indices and, around an attention block's reshapes, grew past 6 GiB in one group
    (maxvit_t). Every op that is not a channel-independent layer couples its inputs and
    outputs (an over-approximation for concatenations: more is left whole, never less); a
    layer reached at its input stops the walk, a layer reached at its output couples only
    that output.
    """
    stack, seen = [(start, "out")], set()
    while stack:
        node, via = stack.pop()
        if (node, via) in seen:
            continue
        seen.add((node, via))
        if node in reshapes:
            return True
        if via == "out":   # the node's output tensor: every consumer reads it
            stack += [(c, "in") for c in node.outputs]
        elif _blocks_channels(node):
            if via == "back":   # a producer of a coupled tensor: its output is coupled
                stack.append((node, "out"))
        else:   # elementwise, normalisation, concat, pooling ...: all coupled
            stack.append((node, "out"))
            stack += [(p, "back") for p in node.inputs]
    return False
