"""A model's compute layers in execution order, its MACs and parameters: ``deploykit inspect``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deploykit.host.progress import Table
from deploykit.models.build import build_model
from deploykit.models.cost import count_macs_params
from deploykit.models.layers import compute_layers_in_order
from deploykit.recipe import ModelSpec

__all__ = ["ModelSummary", "summarize_model"]


@dataclass(frozen=True)
class ModelSummary:
    """``layers``: (name, type, weight shape) of each conv/linear, in the order they run."""

    title: str
    layers: list[tuple[str, str, str]]
    macs: int
    params: int

    def table(self) -> Table:
        return Table(self.title, ("#", "layer", "type", "shape"),
                     [(str(i), *row) for i, row in enumerate(self.layers)])

    def footer(self) -> str:
        return (f"MACs: {self.macs / 1e6:.2f} M  params: {self.params / 1e6:.3f} M\n"
                f"first layer: {self.layers[0][0]}  last layer: {self.layers[-1][0]}")


def summarize_model(spec: ModelSpec, image_size: int) -> ModelSummary:
    """Build ``spec`` (random weights) and describe it at ``image_size`` x ``image_size``.

    Raises:
        ModelError: the model cannot be built.
    """
    shape = (3, image_size, image_size)
    model = build_model(spec)
    layers = []
    for name in compute_layers_in_order(model, torch.zeros(1, *shape)):
        m = model.get_submodule(name)
        w = getattr(m, "weight", None)
        layers.append((name, type(m).__name__,
                       "x".join(map(str, w.shape)) if w is not None else "-"))
    macs, params = count_macs_params(model, shape)
    source = spec.name if spec.source in ("builtin", "factory") else f"{spec.source}:{spec.name}"
    return ModelSummary(f"{source} at {image_size}x{image_size}", layers, macs, params)
