"""Detectors: torchvision's detection models with random weights (no downloads), at the input
size the recipe asks for.

``num_classes`` counts the object classes; torchvision's detectors count the background too,
so the model is built with ``num_classes + 1`` (label 0 is the background). SSDlite takes a
backbone ``width_mult`` (0.5 trains from scratch on two CPU cores); every detector's resize
step is set to ``image_size`` (SSDlite resizes to a fixed square, the others keep the aspect
ratio up to ``image_size``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from deploykit.errors import ModelError

__all__ = ["DETECTORS", "build_detector"]


def _ssdlite(num_classes: int, width_mult: float) -> nn.Module:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                         num_classes=num_classes, width_mult=width_mult)


def _torchvision(name: str) -> Callable[[int, float], nn.Module]:
    def build(num_classes: int, width_mult: float) -> nn.Module:
        import torchvision.models.detection as det

        if width_mult != 1.0:
            raise ModelError(f"model.width_mult: {name} has no width multiplier (only "
                             "ssdlite320_mobilenet_v3_large does); remove it, or prune the "
                             "model to make it smaller")
        return getattr(det, name)(weights=None, weights_backbone=None, num_classes=num_classes)

    return build


DETECTORS: dict[str, Callable[[int, float], nn.Module]] = {
    "ssdlite320_mobilenet_v3_large": _ssdlite,
    "fasterrcnn_mobilenet_v3_large_320_fpn": _torchvision("fasterrcnn_mobilenet_v3_large_320_fpn"),
    "retinanet_resnet50_fpn_v2": _torchvision("retinanet_resnet50_fpn_v2"),
    "fcos_resnet50_fpn": _torchvision("fcos_resnet50_fpn"),
}


def build_detector(name: str, num_classes: int, image_size: int, width_mult: float = 1.0
                   ) -> nn.Module:
    """Build detector ``name`` for ``num_classes`` object classes at ``image_size`` pixels.

    Raises:
        ModelError: an unknown detector, or a width multiplier for one that has none.
    """
    if name not in DETECTORS:
        raise ModelError(f"model.name: unknown detector {name!r}; choose one of: "
                         f"{', '.join(DETECTORS)}")
    model = DETECTORS[name](num_classes + 1, width_mult)
    t = model.transform
    t.min_size, t.max_size = (image_size,), image_size
    if getattr(t, "fixed_size", None) is not None:
        t.fixed_size = (image_size, image_size)
    return model
