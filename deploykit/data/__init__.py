"""Data: classification sets and loaders (:mod:`.classify`) and image decoding checks
(:mod:`.images`). A task's own data (a detector's boxes) lives with the task."""

from deploykit.data.classify import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Loaders,
    TensorLoader,
    build_loaders,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Loaders", "TensorLoader", "build_loaders"]
