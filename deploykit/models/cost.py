"""Static cost of a model: MACs, parameters, file size."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

__all__ = ["count_macs_params", "file_size_bytes"]


def count_macs_params(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """Multiply-accumulates for one image and the parameter count (torch-pruning's counter).

    A model with ``float_equivalent()`` (a fake-quant model) is counted through it.
    """
    import torch_pruning as tp

    if hasattr(model, "float_equivalent"):
        model = model.float_equivalent()
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(m, torch.zeros(1, *input_shape))
    return int(macs), int(params)


def file_size_bytes(path: str | Path) -> int:
    return Path(path).stat().st_size
