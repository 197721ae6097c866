"""Which layers lose the most when quantized, and keeping them float until a bound holds."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from deploykit.host.progress import log, progress_iter
from deploykit.quant.prepare import QuantizedModel

__all__ = ["LayerSensitivity", "accuracy_on", "keep_sensitive_float", "layer_sensitivity",
           "sqnr_db"]

# build(keep_float_names) -> a calibrated fake-quant model
Builder = Callable[[Sequence[str]], QuantizedModel]


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's score; ``damage`` is larger for more sensitive layers (the ranking key)."""

    layer: str
    top1_pct: float | None
    sqnr_db: float | None
    damage: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def accuracy_on(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / max(total, 1)


def _flat(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """One tensor of all outputs (a detector's network has several)."""
    if isinstance(out, torch.Tensor):
        return out
    return torch.cat([t.flatten(1) for t in out], 1)


@torch.no_grad()
def sqnr_db(reference: nn.Module, model: nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """Signal-to-quantization-noise ratio of ``model``'s outputs (logits, or all of a
    detector network's outputs together) against ``reference``'s (dB)."""
    reference.eval()
    model.eval()
    sig = noise = 0.0
    for x in inputs:
        r = _flat(reference(x))
        sig += float((r * r).sum())
        noise += float(((_flat(model(x)) - r) ** 2).sum())
    return math.inf if noise == 0 else 10.0 * math.log10(max(sig, 1e-30) / noise)


def layer_sensitivity(float_model: nn.Module, build: Builder, candidates: Sequence[str],
                      base_keep: Sequence[str], batches: Sequence[tuple[torch.Tensor,
                                                                        torch.Tensor]],
                      metric: str = "accuracy", method: str = "all_but"
                      ) -> list[LayerSensitivity]:
    """Score each of ``candidates`` (quantizable layer names), most sensitive first.

    ``all_but``: quantize everything except this layer; the gain over full INT8 is the damage
    the layer does. ``only``: quantize this layer alone; the loss against float is its damage.
    ``metric``: top-1 on ``batches`` or logit SQNR (no labels needed).
    """
    inputs = [x for x, _ in batches]

    def score(qm: QuantizedModel) -> tuple[float | None, float | None]:
        if metric == "accuracy":
            return accuracy_on(qm, batches), None
        return None, sqnr_db(float_model, qm, inputs)

    if method == "all_but":
        full_acc, full_sqnr = score(build(list(base_keep)))
    else:
        full_acc = accuracy_on(float_model, batches) if metric == "accuracy" else None
    out = []
    for layer in progress_iter(list(candidates), f"sensitivity ({method}, {metric})"):
        if method == "all_but":
            acc, sq = score(build([*base_keep, layer]))
            damage = (acc - full_acc) if metric == "accuracy" else (sq - full_sqnr)
        else:
            others = [n for n in candidates if n != layer]
            acc, sq = score(build([*base_keep, *others]))
            damage = (full_acc - acc) if metric == "accuracy" else -sq
        out.append(LayerSensitivity(layer, acc, sq, float(damage)))
    return sorted(out, key=lambda s: s.damage, reverse=True)


def keep_sensitive_float(build: Builder, keep: Sequence[str], ranking: Sequence[LayerSensitivity],
                         score: Callable[[QuantizedModel], float], float_score: float,
                         max_drop: float, max_float_layers: int
                         ) -> tuple[QuantizedModel, list[str]]:
    """Keep the most sensitive layers float, one more at a time, until the INT8 model's
    ``score`` (top-1, or a detector's mAP@.5, in percent) is within ``max_drop`` points of
    ``float_score``, or ``max_float_layers`` were added. Returns the last model built and the
    layers it keeps float."""
    keep = list(keep)
    qm = build(keep)
    drop = float_score - score(qm)
    for added, r in enumerate(ranking):
        if drop <= max_drop or added >= max_float_layers:
            break
        keep.append(r.layer)
        qm = build(keep)
        drop = float_score - score(qm)
        log(f"quantize: {r.layer} kept float -> drop {drop:.2f} points")
    if drop > max_drop:
        log(f"quantize: WARNING: still {drop:.2f} points below float after keeping "
            f"{len(keep)} layers float (max_float_layers {max_float_layers})")
    return qm, keep
