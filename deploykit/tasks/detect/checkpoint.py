"""Rebuild a saved detector: build it at the recipe's image size, replay its network's (and a
two-stage detector's box head's) recorded pruning, load its weights."""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from deploykit.errors import CheckpointError
from deploykit.models import load_checkpoint, load_weights
from deploykit.recipe import ModelSpec
from deploykit.tasks.base import replay_graphs
from deploykit.tasks.detect.models import detector_from_spec, detector_graphs

__all__ = ["load_detector", "replay_detector_pruning"]


def replay_detector_pruning(model: nn.Module, arch: dict, input_shape: tuple[int, int, int]
                            ) -> nn.Module:
    """Replay a pruned detector's recorded histories on ``model`` (in place): its network's
    (``pruning_history``) and, on a two-stage detector, its box head's
    (``roi_pruning_history``)."""
    replay_graphs(detector_graphs(model, input_shape), arch)
    return model


def load_detector(spec: ModelSpec, image_size: int, checkpoint: str | Path | None = None,
                  model: nn.Module | None = None) -> nn.Module:
    """Build the recipe's detector at ``image_size`` (or take a copy of ``model``) and restore
    ``checkpoint`` (default ``spec.checkpoint``): a pruned detector's history is replayed on
    its network first.

    Raises:
        ModelError: the detector cannot be built.
        CheckpointError: the checkpoint is corrupt or does not fit.
    """
    model = detector_from_spec(spec, image_size) if model is None else copy.deepcopy(model)
    path = checkpoint if checkpoint is not None else spec.checkpoint
    if path is None:
        return model
    ck = load_checkpoint(path)
    arch = ck.get("arch", {})
    if arch.get("pruning_history"):
        try:
            replay_detector_pruning(model, arch, (3, image_size, image_size))
        except Exception as e:
            raise CheckpointError(f"{path}: its pruning history does not apply to this "
                                  f"detector ({type(e).__name__}: {e}); was it pruned from a "
                                  "different model.name or width_mult?") from None
    return load_weights(model, ck["state_dict"], str(path), spec.num_classes)
