"""Rebuild a saved model: build the network, replay its stored architecture, load its weights.

A deploykit checkpoint of a compressed model stores its architecture as data (a pruning
history, a low-rank record), never as pickled classes. Replaying it needs the technique
packages, so this sits above :mod:`deploykit.models`, :mod:`deploykit.prune` and
:mod:`deploykit.lowrank`; everything that turns a recipe's model section (or a checkpoint)
into a module goes through :func:`load_model`.
"""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from deploykit.errors import CheckpointError
from deploykit.host.progress import log
from deploykit.lowrank import rebuild
from deploykit.models import (
    build_model,
    find_first_last,
    load_checkpoint,
    load_pretrained,
    load_weights,
)
from deploykit.prune import replay_pruning
from deploykit.recipe import ModelSpec

__all__ = ["load_model", "restore_checkpoint"]


def restore_checkpoint(model: nn.Module, path: str | Path, num_classes: int,
                       first_last: tuple[str, str], input_shape: tuple[int, int, int]
                       ) -> nn.Module:
    """Load a checkpoint into a freshly built ``model``, replaying a stored pruning and then a
    stored low-rank factorisation first.

    Raises:
        CheckpointError: corrupt file, class-count mismatch or a state dict that does not fit.
    """
    ck = load_checkpoint(path)
    history = ck.get("arch", {}).get("pruning_history")
    if history:
        try:
            replay_pruning(model, history, input_shape)
        except Exception as e:
            raise CheckpointError(f"{path}: its pruning history does not apply to this model "
                                  f"({type(e).__name__}: {e}); was it pruned from a different "
                                  "model.name?") from None
    record = ck.get("arch", {}).get("lowrank")
    if record:
        rebuild(model, record)
    return load_weights(model, ck["state_dict"], str(path), num_classes, first_last[1])


def load_model(spec: ModelSpec, input_shape: tuple[int, int, int],
               checkpoint: str | Path | None = None, model: nn.Module | None = None
               ) -> tuple[nn.Module, tuple[str, str]]:
    """Build ``spec``'s network (or take a copy of ``model``, yours) and restore
    ``checkpoint`` (default: ``spec.checkpoint``).

    Args:
        spec: the recipe's model section.
        input_shape: ``(C, H, W)`` of one image (to find the stem and classifier, and to
            replay a pruning history).
        checkpoint: weights to load instead of ``spec.checkpoint``; neither: random weights.

    Returns:
        The model and the names of its first and last compute layers (stem, classifier).

    Raises:
        ModelError: the network cannot be built.
        CheckpointError: the checkpoint is corrupt or does not fit.

    Example:
        >>> model, (stem, head) = load_model(ModelSpec(name="resnet20"), (3, 32, 32))
        >>> stem, head
        ('conv1', 'fc')
    """
    model = build_model(spec) if model is None else copy.deepcopy(model)
    first_last = find_first_last(model, input_shape)
    path = checkpoint if checkpoint is not None else spec.checkpoint
    if path is not None:
        restore_checkpoint(model, path, spec.num_classes, first_last, input_shape)
    elif spec.weights is not None:   # pretrained weights: where the baseline training starts
        fresh = load_pretrained(model, spec.weights, spec.num_classes, first_last[1])
        log(f"model.weights: loaded {spec.weights}"
            + (f"; it was trained on another class count, so {', '.join(fresh)} start fresh "
               f"for your {spec.num_classes} classes (the baseline training fine-tunes them)"
               if fresh else ""))
    return model, first_last
