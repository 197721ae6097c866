"""Intermediate features by module name, captured with forward hooks during a normal forward.

A tap records a module's output, or with ``pre_relu`` the input of the module's last ReLU call
(the value before the final activation of a residual block: Heo et al.'s distillation
position). Blocks without a ReLU child (MobileNetV2's linear bottlenecks) are already pre-ReLU,
so their output is used.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

from deploykit.errors import RecipeError

__all__ = ["FeatureTaps", "default_taps", "last_bn", "resolve_taps"]


def _children_named(model: nn.Module, prefix: str) -> list[str]:
    return [n for n, _ in model.named_children()] if not prefix else \
        [f"{prefix}.{n}" for n, _ in model.get_submodule(prefix).named_children()]


def default_taps(model: nn.Module) -> list[str]:
    """Stage ends: the last block of each ``layerN`` (CIFAR and torchvision ResNets), or of each
    resolution stage of ``features`` (MobileNets, EfficientNets: the block before a stride)."""
    names = dict(model.named_modules())
    layers = sorted(n for n in names if n.startswith("layer") and n[5:].isdigit())
    if layers:
        return [f"{n}.{len(names[n]) - 1}" if isinstance(names[n], nn.Sequential) else n
                for n in layers]
    if "features" in names and isinstance(names["features"], nn.Sequential):
        return _stage_ends(names["features"], "features")
    raise RecipeError("no default feature taps for this architecture (no layerN or features "
                      "stages); name them in the distill stage's taps: [...]")


def _stage_ends(features: nn.Sequential, prefix: str) -> list[str]:
    """Blocks of ``features`` after which the next block halves the resolution."""
    x_shapes: list[tuple[int, int]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: x_shapes.append(tuple(o.shape[-2:])))
             for m in features]
    try:
        with torch.no_grad():
            features.eval()(torch.zeros(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    ends = [i for i in range(len(x_shapes) - 1) if x_shapes[i + 1] != x_shapes[i]]
    ends.append(len(x_shapes) - 1)
    return [f"{prefix}.{i}" for i in ends if i > 0]


def resolve_taps(model: nn.Module, patterns: Sequence[str] | None) -> list[str]:
    """Module names for ``patterns`` (exact names or fnmatch patterns), or the defaults.

    Raises:
        RecipeError: a pattern matches no module.
    """
    if not patterns:
        return default_taps(model)
    names = [n for n, _ in model.named_modules() if n]
    out: list[str] = []
    for p in patterns:
        hits = [n for n in names if n == p] or [n for n in names if fnmatch.fnmatchcase(n, p)]
        if not hits:
            near = [n for n, _ in model.named_children()][:8]
            raise RecipeError(f"distill taps: no module named {p!r}"
                              + (f"; did you mean one of: {', '.join(near)}" if near else
                                 "; `deploykit inspect` lists the module names"))
        out.extend(h for h in hits if h not in out)
    return out


def last_bn(module: nn.Module) -> nn.BatchNorm2d | None:
    """The BatchNorm feeding the block's pre-ReLU value: the last BatchNorm among the module's
    direct children (``bn2`` of a basic block), else the last one anywhere inside it."""
    direct = [m for m in module.children() if isinstance(m, nn.BatchNorm2d)]
    if direct:
        return direct[-1]
    nested = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    return nested[-1] if nested else None


class FeatureTaps:
    """Hooks that store named features of ``model`` during its forward; use as a context.

    >>> with FeatureTaps(model, ["layer1.2", "layer2.2"], pre_relu=True) as taps:
    ...     logits = model(x)
    ...     feats = taps.features()   # list in the order of the names
    """

    def __init__(self, model: nn.Module, names: Sequence[str], pre_relu: bool = False):
        self.names = list(names)
        self._store: dict[str, torch.Tensor] = {}
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        modules = dict(model.named_modules())
        for name in self.names:
            if name not in modules:
                raise RecipeError(f"distill taps: no module named {name!r} in "
                                  f"{type(model).__name__}")
            mod = modules[name]
            relu = getattr(mod, "relu", None) if pre_relu else None
            if isinstance(relu, nn.ReLU):
                # Clone: an in-place ReLU would overwrite the stored pre-activation.
                self._hooks.append(relu.register_forward_pre_hook(
                    lambda _m, args, name=name: self._store.__setitem__(name, args[0].clone())))
            else:
                self._hooks.append(mod.register_forward_hook(
                    lambda _m, _i, out, name=name: self._store.__setitem__(name, out)))

    def features(self) -> list[torch.Tensor]:
        missing = [n for n in self.names if n not in self._store]
        if missing:
            raise RuntimeError(f"taps not reached by the forward pass: {', '.join(missing)}")
        feats = [self._store[n] for n in self.names]
        self._store.clear()
        return feats

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
