"""A model's compute layers in execution order, its MACs and parameters: ``deploykit inspect``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from deploykit.host.progress import Table
from deploykit.models.build import build_model
from deploykit.models.cost import count_macs_params
from deploykit.models.layers import compute_layers_in_order
from deploykit.recipe import ModelSpec

__all__ = ["ModelSummary", "summarize_model", "summarize_module"]


@dataclass(frozen=True)
class ModelSummary:
    """``layers``: (name, type, weight shape) of each conv/linear, in the order they run;
    ``notes``: layer -> what the techniques do with it by default (e.g. "output kept whole
    by pruning; float in INT8"); ``runs``: how often the graph runs per input image (a box
    head: once per proposal; ``macs`` counts them all)."""

    title: str
    layers: list[tuple[str, str, str]]
    macs: int
    params: int
    notes: dict[str, str] = field(default_factory=dict)
    runs: int = 1
    remark: str = ""

    def table(self) -> Table:
        if not self.notes:
            return Table(self.title, ("#", "layer", "type", "shape"),
                         [(str(i), *row) for i, row in enumerate(self.layers)])
        return Table(self.title, ("#", "layer", "type", "shape", "by default"),
                     [(str(i), *row, self.notes.get(row[0], ""))
                      for i, row in enumerate(self.layers)])

    def footer(self) -> str:
        runs = f" ({self.runs} runs per image)" if self.runs > 1 else ""
        return (f"MACs: {self.macs / 1e6:.2f} M{runs}  params: {self.params / 1e6:.3f} M\n"
                f"first layer: {self.layers[0][0]}  last layer: {self.layers[-1][0]}"
                + (f"\n{self.remark}" if self.remark else ""))


def summarize_module(module: nn.Module, input_shape: tuple[int, int, int], title: str,
                     notes: dict[str, str] | None = None, runs: int = 1,
                     remark: str = "") -> ModelSummary:
    """Describe ``module`` run on one input of ``input_shape``; its MACs counted ``runs``
    times; ``remark`` is printed under it."""
    layers = []
    for name in compute_layers_in_order(module, torch.zeros(1, *input_shape)):
        m = module.get_submodule(name)
        w = getattr(m, "weight", None)
        layers.append((name, type(m).__name__,
                       "x".join(map(str, w.shape)) if w is not None else "-"))
    macs, params = count_macs_params(module, input_shape)
    return ModelSummary(title, layers, macs * runs, params, dict(notes or {}), runs,
                        remark)


def summarize_model(spec: ModelSpec, image_size: int) -> ModelSummary:
    """Build ``spec`` (random weights) and describe it at ``image_size`` x ``image_size``.

    Raises:
        ModelError: the model cannot be built.
    """
    source = spec.name if spec.source in ("builtin", "factory") else f"{spec.source}:{spec.name}"
    return summarize_module(build_model(spec), (3, image_size, image_size),
                            f"{source} at {image_size}x{image_size}")
