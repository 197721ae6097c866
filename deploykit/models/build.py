"""Build models from a recipe's ``model`` section (random weights, never a download).

Sources: ``builtin`` CIFAR ResNets, any ``torchvision`` classification model, ``timm`` models
(optional extra, imported lazily) and ``factory`` callables named ``"package.module:function"``
(this imports and runs your code, like any Python import).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from deploykit.errors import BackendUnavailableError, ModelError
from deploykit.models import cifar_mobilenet, cifar_resnet
from deploykit.recipe import ModelSpec

__all__ = ["BUILTIN_MODELS", "build_factory", "build_model", "parse_model_ref"]

BUILTIN_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": cifar_resnet.resnet20,
    "resnet32": cifar_resnet.resnet32,
    "resnet56": cifar_resnet.resnet56,
    "mobilenet_v2_cifar": cifar_mobilenet.mobilenet_v2_cifar,
}


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


def build_factory(ref: str, num_classes: int) -> nn.Module:
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
    try:
        model = fn(num_classes=num_classes)
    except TypeError as e:
        if "num_classes" not in str(e):
            raise ModelError(f"model.name: {ref}(num_classes={num_classes}) raised TypeError: "
                             f"{e}") from e
        raise ModelError(f"model.name: {ref} must accept a num_classes keyword argument "
                         f"({e}); wrap it: def make(num_classes): ...") from None
    except Exception as e:   # the user's own code failed: name it, keep its traceback chained
        raise ModelError(f"model.name: {ref}(num_classes={num_classes}) raised "
                         f"{type(e).__name__}: {str(e)[:200]}") from e
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
    return build_factory(spec.name, spec.num_classes)


def parse_model_ref(ref: str, num_classes: int = 10) -> ModelSpec:
    """Turn ``resnet20``, ``torchvision:resnet18``, ``timm:NAME`` or ``pkg.mod:fn`` into a spec."""
    source, sep, name = ref.partition(":")
    if not sep:
        return ModelSpec(source="builtin", name=ref, num_classes=num_classes)
    if source in ("builtin", "torchvision", "timm"):
        return ModelSpec(source=source, name=name, num_classes=num_classes)
    return ModelSpec(source="factory", name=ref, num_classes=num_classes)
