"""Build models from a recipe's ``model`` section, load checkpoints, find first/last layers.

Sources: ``builtin`` CIFAR ResNets, any ``torchvision`` classification model, ``timm`` models
(optional extra, imported lazily) and ``factory`` callables named ``"package.module:function"``
(this imports and runs your code, like any Python import).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deploykit import cifar_mobilenet, cifar_resnet
from deploykit.errors import BackendUnavailableError, CheckpointError, ModelError
from deploykit.recipe import ModelSpec

__all__ = [
    "BUILTIN_MODELS",
    "build_model",
    "classifier_out_features",
    "find_first_last",
    "load_checkpoint",
    "load_weights",
    "parse_model_ref",
]

BUILTIN_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": cifar_resnet.resnet20,
    "resnet32": cifar_resnet.resnet32,
    "resnet56": cifar_resnet.resnet56,
    "mobilenet_v2_cifar": cifar_mobilenet.mobilenet_v2_cifar,
}

CHECKPOINT_FORMAT = "deploykit.checkpoint.v1"


def _build_torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ModelError(f"model.name: {name!r} is not a torchvision classification model; "
                         f"examples: resnet18, mobilenet_v2, efficientnet_b0 "
                         f"(all {len(available)}: torchvision.models.list_models())")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _build_timm(name: str, num_classes: int) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise BackendUnavailableError(
            'model.source: timm is not installed; run: pip install "deploykit[timm]"') from None
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    except RuntimeError as e:  # timm raises RuntimeError for unknown names
        raise ModelError(f"model.name: timm cannot build {name!r}: {e}") from None


def _build_factory(ref: str, num_classes: int) -> nn.Module:
    module_name, sep, fn_name = ref.partition(":")
    if not sep or not module_name or not fn_name:
        raise ModelError(f"model.name: factory models are written 'package.module:function', "
                         f"got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelError(f"model.name: cannot import {module_name!r} ({e}); is it installed "
                         "or on PYTHONPATH?") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ModelError(f"model.name: {module_name!r} has no callable {fn_name!r}")
    model = fn(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.name: {ref} returned {type(model).__name__}, not an nn.Module")
    return model


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the network named by ``spec`` with random weights (no downloads).

    Raises:
        ModelError: unknown name.
        BackendUnavailableError: ``timm`` requested but not installed.
    """
    if spec.source == "builtin":
        if spec.name not in BUILTIN_MODELS:
            raise ModelError(f"model.name: unknown builtin model {spec.name!r}; choose one of: "
                             f"{', '.join(BUILTIN_MODELS)} (or set source: torchvision)")
        return BUILTIN_MODELS[spec.name](num_classes=spec.num_classes)
    if spec.source == "torchvision":
        return _build_torchvision(spec.name, spec.num_classes)
    if spec.source == "timm":
        return _build_timm(spec.name, spec.num_classes)
    return _build_factory(spec.name, spec.num_classes)


def parse_model_ref(ref: str, num_classes: int = 10) -> ModelSpec:
    """Turn ``resnet20``, ``torchvision:resnet18``, ``timm:NAME`` or ``pkg.mod:fn`` into a spec."""
    source, sep, name = ref.partition(":")
    if not sep:
        return ModelSpec(source="builtin", name=ref, num_classes=num_classes)
    if source in ("builtin", "torchvision", "timm"):
        return ModelSpec(source=source, name=name, num_classes=num_classes)
    return ModelSpec(source="factory", name=ref, num_classes=num_classes)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``).

    Accepts deploykit checkpoints (``{"format", "state_dict", "arch"}``) and plain state dicts.

    Raises:
        CheckpointError: the file is missing, corrupt or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(
            f"{path}: cannot load checkpoint ({type(e).__name__}: {str(e).splitlines()[0]}). "
            "deploykit loads checkpoints with weights_only=True: save a state_dict "
            "(torch.save(model.state_dict(), path)), not a pickled model") from None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return {"format": CHECKPOINT_FORMAT, "state_dict": obj["state_dict"], "arch": {}}
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"format": CHECKPOINT_FORMAT, "state_dict": obj, "arch": {}}
    raise CheckpointError(f"{path}: not a state dict (found {type(obj).__name__}); save "
                          "model.state_dict()")


def make_checkpoint(model: nn.Module, arch: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The portable checkpoint deploykit writes: plain tensors and data, no pickled classes."""
    return {"format": CHECKPOINT_FORMAT, "state_dict": model.state_dict(),
            "arch": arch or {}, "meta": meta or {}}


def classifier_out_features(model: nn.Module, last_name: str) -> int:
    layer = model.get_submodule(last_name)
    return int(getattr(layer, "out_features", getattr(layer, "out_channels", -1)))


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
        from deploykit.arch import replay_pruning

        try:
            replay_pruning(model, history, input_shape)
        except Exception as e:
            raise CheckpointError(f"{path}: its pruning history does not apply to this model "
                                  f"({type(e).__name__}: {e}); was it pruned from a different "
                                  "model.name?") from None
    record = ck.get("arch", {}).get("lowrank")
    if record:
        from deploykit.lowrank import rebuild

        rebuild(model, record)
    return load_weights(model, ck["state_dict"], str(path), num_classes, first_last[1])


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
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order


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
