"""MobileNetV2 for 32x32 inputs (CIFAR-10): torchvision's network with CIFAR strides.

The ImageNet network downsamples 32x: a 32x32 image would leave 1x1 maps. As in the common
CIFAR adaptations, the stem and the second stage keep stride 1 (8x in total, 4x4 maps before
the pooling). Blocks, widths and the classifier are torchvision's, so pruning, default
distillation taps and first/last detection treat it like torchvision's mobilenet_v2.
"""

from __future__ import annotations

from torch import nn

__all__ = ["mobilenet_v2_cifar"]

# t (expansion), c (channels), n (blocks), s (stride of the first block): torchvision's setting
# with the second stage at stride 1.
_SETTING = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
            [6, 160, 3, 2], [6, 320, 1, 1]]


def mobilenet_v2_cifar(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2 (torchvision) with a stride-1 stem and second stage, for 32x32 inputs."""
    from torchvision.models import MobileNetV2

    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult,
                        inverted_residual_setting=[list(s) for s in _SETTING])
    stem = model.features[0][0]
    stem.stride = (1, 1)
    model.classifier[0].p = 0.0   # no dropout: the short CIFAR budgets here do not need it
    return model
