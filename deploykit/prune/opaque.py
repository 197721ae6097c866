"""Layers to leave whole where torch-pruning cannot follow the channels.

Two patterns break torch-pruning's channel bookkeeping:

* **A reshape that mixes channels.** ShuffleNet mixes channels by reshape -> transpose ->
  reshape. torch-pruning maps channel indices through a reshape only when it flattens; on a
  channel shuffle its shape inference finds no channel count and its index mapping divides by
  zero.
* **A block torch-pruning cannot see into.** torchvision's Swin attention calls
  ``F.linear(x, self.qkv.weight, ...)`` instead of ``self.qkv(x)``: torch-pruning sees no
  layer there, would prune the channels feeding it without its weights, and its shape
  inference through the window reshapes recurses without end. Attention that multiplies
  queries by keys (MaxViT, timm) needs both sides pruned alike, which torch-pruning does not
  know; following its channels through the head reshapes, one group grew past 9 GiB.

Within :func:`tp_tracing` torch-pruning builds its graph with the first kind unmapped and the
second kind sealed (one opaque op whose inside it cannot see). :func:`layers_to_leave_whole`
then walks that graph for the layers whose channels reach either; every other layer can be
pruned (in ShuffleNet the inner 1x1 -> depthwise -> 1x1 channels of each block, in Swin the
MLPs' hidden channels), with the former passed to torch-pruning as ignored layers.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "GraphDoesNotClose",
    "Tracing",
    "layers_to_leave_whole",
    "running_modules",
    "sealed_blocks",
    "tp_tracing",
    "unmapped_reshapes",
]


class GraphDoesNotClose(Exception):
    """torch-pruning's shape inference hit its recursion limit: forming groups on that graph
    grows without bound (seen on swin_t before its attention was sealed)."""

    def __init__(self, count: int):
        super().__init__(f"shape inference hit torch-pruning's recursion limit {count} times")


@dataclass
class Tracing:
    """What :func:`tp_tracing` did to torch-pruning's graph: the reshapes it left unmapped,
    the sealed blocks (name -> why) and the autograd nodes of their outputs."""

    skipped: list[object] = field(default_factory=list)
    blocks: dict[str, str] = field(default_factory=dict)
    sealed: dict[object, str] = field(default_factory=dict)


_PRODUCTS = {"matmul", "__matmul__", "__rmatmul__", "bmm", "baddbmm", "einsum",
             "scaled_dot_product_attention"}


def _tensors(args: object) -> list[torch.Tensor]:
    if isinstance(args, torch.Tensor):
        return [args]
    if isinstance(args, (list, tuple)):
        return [t for a in args for t in _tensors(a)]
    return []


class _BlockFinder(TorchFunctionMode):
    """Records the running modules torch-pruning cannot see into: one that passes a
    descendant's parameter to a torch function itself (the descendant's own ``forward`` does
    not run), or one that multiplies two activations (attention scores: the channels of both
    sides must be pruned alike, which torch-pruning does not know)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.owner = {id(p): n for n, m in model.named_modules()
                      for p in m.parameters(recurse=False)}
        self.running: list[tuple[str, nn.Module]] = []   # set by sealed_blocks
        self.found: dict[str, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name, module = self.running[-1] if self.running else ("", None)
        if self.running and not isinstance(module, nn.MultiheadAttention):  # torch-pruning's
            tensors = _tensors([*args, *kwargs.values()])
            for t in tensors:
                o = self.owner.get(id(t)) if isinstance(t, nn.Parameter) else None
                if o is not None and o != name and o.startswith(f"{name}." if name else ""):
                    self.found.setdefault(name, f"it applies {o}'s weights functionally")
            if (getattr(func, "__name__", "") in _PRODUCTS
                    and sum(not isinstance(t, nn.Parameter) for t in tensors) >= 2):
                self.found.setdefault(name, "it multiplies two activations, as attention does")
        return func(*args, **kwargs)


@contextlib.contextmanager
def running_modules(model: nn.Module) -> Iterator[list[tuple[str, nn.Module]]]:
    """Within this block, the yielded list is the stack of ``model``'s modules whose forward
    is running, innermost last (name, module); after an exception, the innermost module it
    left is still on top."""
    running: list[tuple[str, nn.Module]] = []

    def leave(*_: object) -> None:   # returns None: the output stays as it is
        running.pop()

    handles = []
    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(
            lambda mod, inp, n=name: running.append((n, mod))))   # append returns None
        handles.append(m.register_forward_hook(leave))
    try:
        yield running
    finally:
        for h in handles:
            h.remove()


def sealed_blocks(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """Modules (name -> why) torch-pruning cannot see into (:class:`_BlockFinder`): Swin's
    attention (it applies its ``qkv`` weights functionally), MaxViT's and timm's attention
    (they multiply queries by keys). ``nn.MultiheadAttention`` is not one: torch-pruning
    handles it. One forward pass on ``example``, in eval mode, without gradients; the
    outermost of nested ones."""
    finder = _BlockFinder(model)
    training = model.training
    try:
        model.eval()
        with running_modules(model) as finder.running, torch.no_grad(), finder:
            model(example)
    finally:
        model.train(training)
    found = finder.found
    return {n: why for n, why in found.items()
            if not any(n.startswith(f"{o}.") or (not o and n) for o in found if o != n)}


class _Sealed(torch.autograd.Function):
    """One autograd node for a whole block: torch-pruning's trace sees its inputs and output,
    not its inside. Only ever traced, never differentiated."""

    @staticmethod
    def forward(ctx, fn, *args):
        ctx.n_inputs = 1 + len(args)
        return fn(*args)

    @staticmethod
    def backward(ctx, *grads):
        return (None,) * ctx.n_inputs


@contextlib.contextmanager
def _sealed(model: nn.Module, tracing: Tracing) -> Iterator[None]:
    patched = []
    for name, why in tracing.blocks.items():
        block = model.get_submodule(name)
        original = block.forward

        def forward(*args, _f=original, _n=name, _w=why, **kwargs):
            out = _Sealed.apply(functools.partial(_f, **kwargs), *args)
            for t in _tensors(out):
                if t.grad_fn is not None:
                    tracing.sealed[t.grad_fn] = f"{_n} ({_w})"
            return out

        patched.append((block, block.__dict__.get("forward")))
        block.forward = forward
    try:
        yield
    finally:
        for block, own in patched:
            if own is None:
                del block.forward   # back to the class's forward
            else:
                block.forward = own


@contextlib.contextmanager
def unmapped_reshapes(skipped: list[object] | None = None) -> Iterator[list[object]]:
    """Within this block, a reshape whose channel mapping torch-pruning cannot compute
    (ZeroDivisionError) is left unmapped and appended to the yielded list instead of aborting
    its graph. torch-pruning maps indices when it builds a graph and again whenever it forms a
    group (a pruner's ``step`` and ``regularize``)."""
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


@contextlib.contextmanager
def tp_tracing(model: nn.Module, example: torch.Tensor) -> Iterator[Tracing]:
    """Wrap a torch-pruning graph build over ``model``: :func:`unmapped_reshapes`, and the
    :func:`sealed_blocks` sealed. Only sound when the layers of
    :func:`layers_to_leave_whole` are ignored."""
    tracing = Tracing(blocks=sealed_blocks(model, example))
    with unmapped_reshapes(tracing.skipped), _sealed(model, tracing):
        yield tracing


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
    """Conv/linear layers (name -> why) that torch-pruning must leave whole: the layers of
    :func:`sealed_blocks`, and those whose channel group reaches one of them or passes
    through a reshape that mixes channels (:class:`_ReshapeRecorder`) or one torch-pruning
    cannot map; empty when the model has none.

    Raises:
        GraphDoesNotClose: before forming any group, when the graph does not close.
    """
    import torch_pruning as tp

    recorder = _ReshapeRecorder()
    with (tp_tracing(model, example) as tracing, recorder,
          warnings.catch_warnings(record=True) as caught):
        warnings.simplefilter("always")   # during torch-pruning's own forward: the same
        graph = tp.DependencyGraph().build_dependency(model, example)   # autograd nodes
    deep = sum("Maximum recursive depth" in str(w.message) for w in caught)
    if deep:   # grouping such a graph is what grows without bound: stop before it
        raise GraphDoesNotClose(deep)
    mixing = "its channels pass through a channel-mixing reshape"
    stops = {n: mixing for n in graph.module2node.values()
             if n.type == tp.ops.OPTYPE.RESHAPE and n.grad_fn in recorder.mixing}
    stops.update((n, mixing) for n in tracing.skipped)
    stops.update((n, f"its channels reach {tracing.sealed[n.grad_fn]}")
                 for n in graph.module2node.values() if n.grad_fn in tracing.sealed)
    whole = {f"{block}.{name}" if name else block: f"inside {block} ({why})"
             for block, why in tracing.blocks.items()
             for name, layer in model.get_submodule(block).named_modules()
             if isinstance(layer, (nn.Conv2d, nn.Linear))}
    if stops:
        nodes = graph.module2node
        for name, layer in model.named_modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and layer in nodes:
                hit = _reaches(nodes[layer], stops)
                if hit is not None:
                    whole.setdefault(name, stops[hit])
    return whole


def _blocks_channels(node: object) -> bool:
    """A layer whose input and output channels are independent (stops the coupling): a
    conv (not depthwise), a linear layer, an attention block."""
    m = node.module
    if isinstance(m, nn.Conv2d):
        return not (m.groups > 1 and m.groups == m.in_channels == m.out_channels)
    return isinstance(m, (nn.Linear, nn.MultiheadAttention))


def _reaches(start: object, stops: dict[object, str]) -> object | None:
    """The first of ``stops`` that ``start``'s output channels are coupled to, or None.

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
        if node in stops:
            return node
        if via == "out":   # the node's output tensor: every consumer reads it
            stack += [(c, "in") for c in node.outputs]
        elif _blocks_channels(node):
            if via == "back":   # a producer of a coupled tensor: its output is coupled
                stack.append((node, "out"))
        else:   # elementwise, normalisation, concat, pooling ...: all coupled
            stack.append((node, "out"))
            stack += [(p, "back") for p in node.inputs]
    return None
