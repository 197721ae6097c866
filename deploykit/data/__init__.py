"""Data: classification sets and loaders (:mod:`.classify`); detection sets: the generated
shapes (:mod:`.shapes`) and COCO-format folders (:mod:`.coco`); decoding checks
(:mod:`.images`)."""

from deploykit.data.classify import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Loaders,
    TensorLoader,
    build_loaders,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Loaders", "TensorLoader", "build_loaders"]
