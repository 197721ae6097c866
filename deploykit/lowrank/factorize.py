"""Low-rank factorisation of convolutions and linear layers.

* SVD: ``W (m x n) ~ U_r S_r V_r^T``; a linear layer becomes two (n -> r -> m); a convolution,
  reshaped to ``(C_out, C_in*kh*kw)``, becomes a kh x kw conv with r filters and a 1x1 conv.
* Tucker-2 (Kim et al. 2016) on the two channel modes of a conv kernel, computed with tensorly's
  ``partial_tucker`` (HOOI): 1x1 conv (C_in -> R1), kh x kw conv (R1 -> R2), 1x1 conv
  (R2 -> C_out).

A factorised layer is replaced by an ``nn.Sequential`` under the same name, so patterns and
taps naming its parent still work. :func:`rebuild` recreates the structure from the stage's
record, so a checkpoint of a factorised model loads into a freshly built one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from deploykit.errors import RecipeError
from deploykit.lowrank.plan import LayerPlan, plan_layers
from deploykit.models import count_macs_params
from deploykit.recipe import LowRankSpec

__all__ = ["apply_plans", "factorise", "rebuild", "svd_conv", "svd_linear", "tucker2_conv"]


# -- factorised modules -----------------------------------------------------------------------

def _copy_bias(dst: nn.Module, src: nn.Module) -> None:
    if src.bias is not None:
        dst.bias.data.copy_(src.bias.detach())


def svd_linear(lin: nn.Linear, r: int) -> nn.Sequential:
    """Two linears (n -> r -> m) from the truncated SVD, singular values split evenly."""
    u, s, vh = torch.linalg.svd(lin.weight.detach().double(), full_matrices=False)
    root = s[:r].sqrt()
    a = nn.Linear(lin.in_features, r, bias=False)
    b = nn.Linear(r, lin.out_features, bias=lin.bias is not None)
    a.weight.data.copy_(root[:, None] * vh[:r])
    b.weight.data.copy_(u[:, :r] * root[None])
    _copy_bias(b, lin)
    return nn.Sequential(a, b)


def _conv(c_in: int, c_out: int, like: nn.Conv2d | None, bias: bool) -> nn.Conv2d:
    if like is None:
        return nn.Conv2d(c_in, c_out, 1, bias=bias)
    return nn.Conv2d(c_in, c_out, like.kernel_size, like.stride, like.padding, like.dilation,
                     bias=bias)


def svd_conv(conv: nn.Conv2d, r: int) -> nn.Sequential:
    """A kh x kw conv with ``r`` filters (the original stride/padding) and a 1x1 conv."""
    w = conv.weight.detach().double()
    u, s, vh = torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
    root = s[:r].sqrt()
    a = _conv(conv.in_channels, r, conv, bias=False)
    b = _conv(r, conv.out_channels, None, bias=conv.bias is not None)
    a.weight.data.copy_((root[:, None] * vh[:r]).reshape(r, *w.shape[1:]))
    b.weight.data.copy_((u[:, :r] * root[None]).reshape(conv.out_channels, r, 1, 1))
    _copy_bias(b, conv)
    return nn.Sequential(a, b)


def _partial_tucker(w: np.ndarray, ranks: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    tl.set_backend("numpy")
    out = partial_tucker(w, rank=ranks, modes=[0, 1], init="svd", n_iter_max=20, tol=1e-5)
    # tensorly >= 0.8 returns ((core, factors), errors); older versions (core, factors)
    core, factors = out[0] if isinstance(out[0], tuple | list) else out
    return np.asarray(core), [np.asarray(f) for f in factors]


def tucker2_conv(conv: nn.Conv2d, r_in: int, r_out: int) -> nn.Sequential:
    """1x1 (C_in -> r_in), kh x kw core (r_in -> r_out, original stride), 1x1 (-> C_out)."""
    w = conv.weight.detach().double().numpy()
    core, (u_out, u_in) = _partial_tucker(w, [r_out, r_in])
    first = nn.Conv2d(conv.in_channels, r_in, 1, bias=False)
    mid = _conv(r_in, r_out, conv, bias=False)
    last = nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None)
    first.weight.data.copy_(torch.from_numpy(u_in.T.copy()).view(r_in, conv.in_channels, 1, 1))
    mid.weight.data.copy_(torch.from_numpy(core))
    last.weight.data.copy_(torch.from_numpy(u_out.copy()).view(conv.out_channels, r_out, 1, 1))
    _copy_bias(last, conv)
    return nn.Sequential(first, mid, last)


def _factorise(layer: nn.Module, method: str, ranks: Sequence[int]) -> nn.Sequential:
    if isinstance(layer, nn.Linear):
        return svd_linear(layer, ranks[0])
    if method == "svd":
        return svd_conv(layer, ranks[0])
    return tucker2_conv(layer, ranks[0], ranks[1])


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _relative_error(old: torch.Tensor, new: nn.Sequential, layer: nn.Module) -> float:
    """||W - W_hat|| / ||W||, with W_hat the factorised layer's effective weight."""
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            eff = new[1].weight.double() @ new[0].weight.double()
        else:
            mats = [m.weight.double() for m in new]
            if len(mats) == 2:   # svd: 1x1 after the kh x kw conv
                eff = torch.einsum("or,rikl->oikl", mats[1][:, :, 0, 0], mats[0])
            else:                # tucker2: 1x1, core, 1x1
                eff = torch.einsum("ob,bakl,ai->oikl", mats[2][:, :, 0, 0], mats[1],
                                   mats[0][:, :, 0, 0])
        return float((eff - old.double()).norm() / old.double().norm().clamp_min(1e-30))


def apply_plans(model: nn.Module, plans: Sequence[LayerPlan]) -> nn.Module:
    """Replace every ``factorised`` layer of ``model`` in place; fills each plan's rel_error."""
    modules = dict(model.named_modules())
    for p in plans:
        if p.status != "factorised":
            continue
        layer = modules[p.name]
        new = _factorise(layer, p.method, p.ranks).to(layer.weight.dtype)
        p.rel_error = _relative_error(layer.weight.detach(), new, layer)
        _set(model, p.name, new.to(layer.weight.device))
    return model


def rebuild(model: nn.Module, record: Sequence[dict]) -> nn.Module:
    """Recreate the factorised structure (untrained weights) from a stage's per-layer record,
    so a state dict saved after factorisation loads into a freshly built model."""
    modules = dict(model.named_modules())
    for p in record:
        if p["status"] != "factorised":
            continue
        if p["name"] not in modules:
            raise RecipeError(f"lowrank record names {p['name']!r}, which this model lacks")
        layer = modules[p["name"]]
        r = p["ranks"]
        if isinstance(layer, nn.Linear):
            new = nn.Sequential(nn.Linear(layer.in_features, r[0], bias=False),
                                nn.Linear(r[0], layer.out_features, bias=layer.bias is not None))
        elif p["method"] == "svd":
            new = nn.Sequential(_conv(layer.in_channels, r[0], layer, False),
                                _conv(r[0], layer.out_channels, None, layer.bias is not None))
        else:
            new = nn.Sequential(nn.Conv2d(layer.in_channels, r[0], 1, bias=False),
                                _conv(r[0], r[1], layer, False),
                                nn.Conv2d(r[1], layer.out_channels, 1,
                                          bias=layer.bias is not None))
        _set(model, p["name"], new)
    return model


def factorise(model: nn.Module, spec: LowRankSpec, shape: tuple[int, int, int],
              first_last: tuple[str, str]) -> list[LayerPlan]:
    """Plan ranks for ``spec`` and factorise ``model`` in place; return the per-layer plans."""
    t = spec.target
    plans = plan_layers(model, shape, spec.method, energy=t.energy, rank=t.rank,
                        macs_ratio=t.macs_ratio, patterns=spec.layers, keep=spec.keep,
                        first_last=first_last, model_macs=count_macs_params(model, shape)[0])
    apply_plans(model, plans)
    return plans
