"""Checkpoints: deploykit's portable format, safe loading, and weights with errors to act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from deploykit.errors import CheckpointError

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "load_weights", "make_checkpoint"]

CHECKPOINT_FORMAT = "deploykit.checkpoint.v1"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``).

    Accepts deploykit checkpoints (``{"format", "state_dict", "arch"}``) and plain state dicts.

    Raises:
        CheckpointError: the file is missing, corrupt or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes), as a copy or save that was "
                              "interrupted leaves it; save the checkpoint again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe files
        first = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path}: cannot load checkpoint ({type(e).__name__}: {first}). "
            "deploykit loads checkpoints with weights_only=True: save a state_dict "
            "(torch.save(model.state_dict(), path)), not a pickled model") from None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        ckpt = obj
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        ckpt = {"format": CHECKPOINT_FORMAT, "state_dict": obj["state_dict"], "arch": {}}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        ckpt = {"format": CHECKPOINT_FORMAT, "state_dict": obj, "arch": {}}
    else:
        raise CheckpointError(f"{path}: not a state dict (found {type(obj).__name__}); save "
                              "model.state_dict()")
    _check_finite(ckpt["state_dict"], path)
    return ckpt


def _check_finite(state_dict: dict[str, Any], path: Path) -> None:
    """Refuse weights that are NaN or infinite: training on them, or exporting them, would
    fail much later with an error that blames something else."""
    bad = [k for k, v in state_dict.items() if isinstance(v, torch.Tensor)
           and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"{path}: {len(bad)} of {len(state_dict)} tensors hold NaN or infinite values "
            f"(first: {bad[0]}); the training that saved it diverged. Use an earlier checkpoint, "
            "or retrain with a lower train.lr (or train.grad_clip)")


def make_checkpoint(model: nn.Module, arch: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The portable checkpoint deploykit writes: plain tensors and data, no pickled classes."""
    return {"format": CHECKPOINT_FORMAT, "state_dict": model.state_dict(),
            "arch": arch or {}, "meta": meta or {}}


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                 num_classes: int, last_name: str | None = None) -> nn.Module:
    """Load ``state_dict`` into ``model`` with errors a user can act on.

    Raises:
        CheckpointError: class-count mismatch, missing/unexpected keys or shape mismatches.
    """
    own = model.state_dict()
    if last_name is not None:
        key = f"{last_name}.weight"
        if key in state_dict and key in own and state_dict[key].shape[0] != own[key].shape[0]:
            raise CheckpointError(
                f"{source}: the checkpoint's classifier ({last_name}) has "
                f"{state_dict[key].shape[0]} classes but model.num_classes is {num_classes}; "
                f"set model.num_classes: {state_dict[key].shape[0]} or use a checkpoint trained "
                f"on {num_classes} classes")
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shape_bad = [k for k in own.keys() & state_dict.keys() if own[k].shape != state_dict[k].shape]
    if missing or unexpected or shape_bad:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shape_bad:
            k = shape_bad[0]
            parts.append(f"shape mismatch at {k}: checkpoint {tuple(state_dict[k].shape)} vs "
                         f"model {tuple(own[k].shape)}")
        raise CheckpointError(f"{source}: checkpoint does not fit the model ({'; '.join(parts)}); "
                              "check model.source/name, or whether it was saved after pruning")
    model.load_state_dict(state_dict)
    return model


def load_pretrained(model: nn.Module, path: str | Path, num_classes: int,
                    last_name: str | None) -> list[str]:
    """Load pretrained weights (a state dict file: torchvision's, timm's or your own) into a
    freshly built ``model`` as the start of its training. Where the file was trained on
    another class count, the classifier's parameters (``last_name``, and any auxiliary
    classifier sized by the class count) keep their fresh initialisation. A ``module.``
    prefix (a DataParallel / DDP save) is dropped.

    Returns:
        The parameter names that start fresh.

    Raises:
        CheckpointError: unreadable, a compressed deploykit model (that is a
            ``model.checkpoint``), or weights that do not fit the model otherwise.
    """
    ck = load_checkpoint(path)
    if ck.get("arch"):
        raise CheckpointError(f"{path}: a compressed deploykit model (pruned or factorised), "
                              "not weights to start training from; give it as "
                              "model.checkpoint")
    state = {k.removeprefix("module."): v for k, v in ck["state_dict"].items()}
    own = model.state_dict()
    fresh = [k for k, v in own.items() if k in state and state[k].shape != v.shape
             and v.dim() >= 1 and v.shape[0] == num_classes
             and ((last_name is not None and k.startswith(f"{last_name}."))
                  or state[k].shape[1:] == v.shape[1:])]
    state.update({k: own[k] for k in fresh})
    load_weights(model, state, str(path), num_classes)
    return fresh
