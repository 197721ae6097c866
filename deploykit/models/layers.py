"""Which layers compute, in the order a forward pass runs them: the stem and the classifier."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from deploykit.errors import ModelError

__all__ = ["check_forward", "compute_layers_in_order", "find_first_last", "layer_widths"]


_COMPUTE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def compute_layers_in_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of conv/linear layers in the order a forward pass runs them (each once)."""
    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def hook(mod: nn.Module, *_: Any) -> None:
        name = names[mod]
        if name not in order:
            order.append(name)

    for m in model.modules():
        if isinstance(m, _COMPUTE) or type(m).__name__ == "NonDynamicallyQuantizableLinear":
            handles.append(m.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    except Exception as e:
        raise ModelError(
            f"model: {type(model).__name__}'s forward fails on {tuple(example.shape[1:])} inputs "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check "
            "data.image_size against the model's smallest input") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order


def check_forward(model: nn.Module, input_shape: tuple[int, int, int]) -> None:
    """Run a copy of ``model`` once in training mode and once in eval mode on a batch of two
    zero images of ``input_shape``, before any long work (a copy, so BatchNorm statistics of
    the model itself are untouched).

    Raises:
        ModelError: either forward fails at this input size (inception_v3's auxiliary head
            needs larger images in training than its 75x75 minimum for inference).
    """
    probe = copy.deepcopy(model)
    for mode in ("train", "eval"):
        try:
            with torch.no_grad():
                probe.train(mode == "train")(torch.zeros(2, *input_shape))
        except Exception as e:
            raise ModelError(
                f"model: {type(model).__name__}'s {mode}-mode forward fails on "
                f"{input_shape[1]}x{input_shape[2]} images ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); raise data.image_size (in "
                "training, auxiliary heads often need larger inputs than inference)") from None


def find_first_last(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[str, str]:
    """Find the stem conv and the classifier: the first and last compute layers executed.

    Execution order (not definition order) makes this work for any architecture: ResNets,
    MobileNets, EfficientNets, ViTs (``conv_proj`` ... ``heads.head``).

    Raises:
        ModelError: the model has no conv or linear layer.
    """
    order = compute_layers_in_order(model, torch.zeros(1, *input_shape))
    if not order:
        raise ModelError("the model has no Conv or Linear layers to treat as first/last")
    return order[0], order[-1]


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output width of every conv and linear layer (channels or features)."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            widths[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            widths[name] = m.out_features
    return widths
