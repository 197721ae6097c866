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

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from deploykit.errors import RecipeError

__all__ = ["LayerPlan", "apply_plans", "conv_macs", "factorised_macs", "linear_macs",
           "plan_layers", "rank_for_energy", "rebuild", "svd_conv", "svd_linear",
           "tucker2_conv"]


@dataclass
class LayerPlan:
    """What happens to one layer: its ranks (one for SVD, ``(R_in, R_out)`` for Tucker-2), MACs
    before and after, and ``status`` (``factorised`` or why it was left alone)."""

    name: str
    method: str
    ranks: list[int]
    full_ranks: list[int]
    macs_before: int
    macs_after: int
    status: str = "factorised"
    rel_error: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# -- MACs -------------------------------------------------------------------------------------

def conv_macs(conv: nn.Conv2d, out_hw: tuple[int, int]) -> int:
    kh, kw = conv.kernel_size
    return conv.out_channels * (conv.in_channels // conv.groups) * kh * kw * out_hw[0] * out_hw[1]


def linear_macs(lin: nn.Linear) -> int:
    return lin.in_features * lin.out_features


def factorised_macs(layer: nn.Module, method: str, ranks: Sequence[int],
                    in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """MACs of ``layer`` after factorisation with ``ranks`` (no bias terms, like conv_macs)."""
    if isinstance(layer, nn.Linear):
        return ranks[0] * (layer.in_features + layer.out_features)
    kh, kw = layer.kernel_size
    ho, wo = out_hw
    if method == "svd":
        r = ranks[0]
        return r * layer.in_channels * kh * kw * ho * wo + layer.out_channels * r * ho * wo
    r_in, r_out = ranks
    return (layer.in_channels * r_in * in_hw[0] * in_hw[1] + r_in * r_out * kh * kw * ho * wo
            + r_out * layer.out_channels * ho * wo)


# -- rank choice ------------------------------------------------------------------------------

def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest r whose top-r squared singular values hold ``energy`` of the total."""
    e = singular_values.double().pow(2)
    cum = torch.cumsum(e, 0) / e.sum().clamp_min(1e-30)
    return int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype) - 1e-12)) + 1


def _spectra(layer: nn.Module, method: str) -> list[torch.Tensor]:
    w = layer.weight.detach().double()
    if isinstance(layer, nn.Linear) or method == "svd":
        return [torch.linalg.svdvals(w.reshape(w.shape[0], -1))]
    # Tucker-2: the unfoldings along the input-channel and output-channel modes
    return [torch.linalg.svdvals(w.transpose(0, 1).reshape(w.shape[1], -1)),
            torch.linalg.svdvals(w.reshape(w.shape[0], -1))]


def _fixed_rank(full: int, rank: float) -> int:
    r = math.ceil(rank * full) if rank < 1 else int(rank)
    return max(1, min(r, full))


def _io_sizes(model: nn.Module, names: list[str], shape: tuple[int, int, int]
              ) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    sizes: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(
        lambda _m, i, o, n=n: sizes.__setitem__(n, (tuple(i[0].shape[-2:]),
                                                    tuple(o.shape[-2:]))))
        for n in names]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return sizes


def eligible_layers(model: nn.Module, patterns: Sequence[str], keep: Sequence[str],
                    first_last: tuple[str, str]) -> tuple[list[str], dict[str, str]]:
    """Names of the layers to factorise, and of matching layers left alone with the reason.

    Raises:
        RecipeError: a pattern matches no convolution or linear layer.
    """
    keep_names = {first_last[0] if k == "first" else first_last[1] if k == "last" else k
                  for k in keep}
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    chosen, skipped = [], {}
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) for n, _ in layers):
            raise RecipeError(f"lowrank layers: {p!r} matches no Conv2d or Linear layer; "
                              "`deploykit inspect` lists the layer names")
    for n, m in layers:
        if not any(fnmatch.fnmatchcase(n, p) for p in patterns):
            continue
        if n in keep_names or any(fnmatch.fnmatchcase(n, k) for k in keep_names):
            skipped[n] = "kept (keep)"
        elif isinstance(m, nn.Conv2d) and m.groups != 1:
            skipped[n] = "grouped/depthwise conv"
        elif isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            skipped[n] = f"padding_mode {m.padding_mode}"
        else:
            chosen.append(n)
    return chosen, skipped


def plan_layers(model: nn.Module, shape: tuple[int, int, int], method: str, *,
                energy: float | None = None, rank: float | None = None,
                macs_ratio: float | None = None, patterns: Sequence[str] = ("*",),
                keep: Sequence[str] = ("first", "last"),
                first_last: tuple[str, str] = ("", ""), model_macs: int | None = None
                ) -> list[LayerPlan]:
    """Choose ranks for every eligible layer (exactly one of energy, rank, macs_ratio).

    ``macs_ratio`` bisects one energy level shared by all layers until the whole model
    (``model_macs``: its total MACs) keeps that fraction. Layers whose factorised form would not
    have fewer MACs stay whole, with that reason in their plan.
    """
    names, skipped = eligible_layers(model, patterns, keep, first_last)
    modules = dict(model.named_modules())
    sizes = _io_sizes(model, names, shape)
    spectra = {n: _spectra(modules[n], method) for n in names}
    before = {}
    for n in names:
        m = modules[n]
        before[n] = linear_macs(m) if isinstance(m, nn.Linear) else conv_macs(m, sizes[n][1])

    def plans_at(e: float | None, r: float | None) -> list[LayerPlan]:
        out = []
        for n in names:
            m = modules[n]
            full = [len(s) for s in spectra[n]]
            ranks = [rank_for_energy(s, e) if e is not None else _fixed_rank(f, r)
                     for s, f in zip(spectra[n], full, strict=True)]
            meth = "svd" if isinstance(m, nn.Linear) else method
            after = factorised_macs(m, meth, ranks, *sizes[n])
            status = "factorised" if after < before[n] else "no MACs saved at this rank"
            out.append(LayerPlan(n, meth, ranks, full, before[n],
                                 after if status == "factorised" else before[n], status))
        return out

    if macs_ratio is not None:
        if model_macs is None:
            raise ValueError("macs_ratio needs model_macs")
        target = macs_ratio * model_macs
        lo, hi, best = 0.0, 1.0, plans_at(1e-9, None)

        def total(ps: list[LayerPlan]) -> float:
            return model_macs - sum(p.macs_before - p.macs_after for p in ps)

        for _ in range(30):
            mid = (lo + hi) / 2
            ps = plans_at(mid, None)
            if total(ps) <= target:
                lo, best = mid, ps
            else:
                hi = mid
        result = best
    else:
        result = plans_at(energy, rank)
    for n, why in skipped.items():
        result.append(LayerPlan(n, method, [], [], 0, 0, why))
    return result


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
