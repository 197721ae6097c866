"""Swapping a model's hard activations for ReLU6, as NPU toolchains and some integer runtimes
want: HardSwish (``x * relu6(x + 3) / 6``) has no integer kernel in ONNX Runtime's CPU EP, so
an INT8 MobileNetV3 leaves the quantized domain at every one of them; ReLU6 folds into the
convolution before it. The swap changes the function the model computes: recover the accuracy
by training (QAT, or a distill stage) after it."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HardSigmoidRelu6", "replace_hard_activations"]


class HardSigmoidRelu6(nn.Module):
    """``relu6(x + 3) / 6``: HardSigmoid written with ReLU6 (the same function), so a runtime
    that fuses ReLU6 but not HardSigmoid sees a clip."""

    def __init__(self) -> None:
        super().__init__()
        self.relu6 = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu6(x + 3.0) / 6.0


def replace_hard_activations(model: nn.Module) -> list[str]:
    """Replace every ``nn.Hardswish`` by ``nn.ReLU6`` and every ``nn.Hardsigmoid`` by
    :class:`HardSigmoidRelu6`, in place; also the squeeze-excitation blocks' ``scale_activation``
    attribute (torchvision's). Returns the names of the modules replaced."""
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Hardswish):
                setattr(module, child_name, nn.ReLU6(inplace=getattr(child, "inplace", False)))
                replaced.append(full)
            elif isinstance(child, nn.Hardsigmoid):
                setattr(module, child_name, HardSigmoidRelu6())
                replaced.append(full)
    return replaced
