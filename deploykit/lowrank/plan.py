"""Choosing ranks: which layers can be factorised, their spectra, and the MACs each rank costs.

SVD factorises ``W (m x n) ~ U_r S_r V_r^T``; Tucker-2 (Kim et al. 2016) the two channel modes
of a conv kernel. A rank is chosen per layer by energy (the fraction of the squared singular
values kept), as a fixed rank, or by one energy level shared by every layer, bisected until the
model keeps a fraction of its MACs. :mod:`deploykit.lowrank.factorize` builds the layers.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from deploykit.errors import RecipeError

__all__ = ["LayerPlan", "conv_macs", "eligible_layers", "factorised_macs", "linear_macs",
           "plan_layers", "rank_for_energy"]


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
