"""Data: classification sets and loaders (:mod:`.classify`); the generated detection set
(:mod:`.shapes`)."""

from deploykit.data.classify import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Loaders,
    TensorLoader,
    build_loaders,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Loaders", "TensorLoader", "build_loaders"]
