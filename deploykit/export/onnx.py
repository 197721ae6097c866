"""Export a PyTorch model to a single ONNX file with a dynamic batch axis, then check it.

A model that must look different while it is exported (a fake-quant model emits explicit
QuantizeLinear/DequantizeLinear) provides ``export_context()``: a context manager the exporter
enters around the export. That hook keeps this module free of any technique's code.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from deploykit.errors import DeployKitError
from deploykit.runfiles.atomic import atomic_path

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "ExportError", "export_onnx"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(DeployKitError):
    """The model could not be exported to ONNX."""


def export_onnx(model: nn.Module, input_shape: tuple[int, int, int], path: str | Path,
                opset: int = 18, dynamic_batch: bool = True, example_batch: int = 2,
                output_names: Sequence[str] = (OUTPUT_NAME,),
                metadata: dict[str, str] | None = None) -> Path:
    """Export ``model`` (eval mode, CPU) to ``path`` and validate it with ``onnx.checker``.

    Args:
        model: the module to export; it is not modified.
        input_shape: ``(C, H, W)``.
        path: destination ``.onnx`` file, written atomically (one file, no external data).
        opset: ONNX opset (18+ with the dynamo exporter).
        dynamic_batch: make axis 0 of input and output symbolic (``batch``).
        example_batch: batch size of the tracing example.
        output_names: one name per output of ``model`` (a tuple output gives several).
        metadata: key -> value pairs stored in the file's ``metadata_props``.

    Returns:
        ``path``.

    Raises:
        ExportError: the exporter or the checker failed.
    """
    path = Path(path)
    was_training = model.training
    model.eval()
    example = torch.randn(example_batch, *input_shape)
    dyn = {"x": {0: torch.export.Dim("batch", min=1, max=65536)}} if dynamic_batch else None
    first_arg = next(iter(_forward_arg_names(model)), "x")
    if dyn is not None:
        dyn = {first_arg: dyn["x"]}
    try:
        with atomic_path(path) as tmp, quiet_export(), _export_context(model):
            torch.onnx.export(model, (example,), str(tmp), dynamo=True, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(output_names),
                              dynamic_shapes=dyn, external_data=False, verbose=False)
            exported = onnx.load(str(tmp))
            _drop_debug_notes(exported)
            for key, value in (metadata or {}).items():
                exported.metadata_props.add(key=key, value=value)
            onnx.save(exported, str(tmp))
            onnx.checker.check_model(exported, full_check=True)
    except DeployKitError:
        raise
    except Exception as e:
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from e
    finally:
        model.train(was_training)
    return path


# The one per-node note kept: the module each node came from, which the divergence search
# (deploykit.bench.divergence) reads to name the layer where an artifact departs from PyTorch.
_KEPT_NOTE = "pkg.torch.onnx.name_scopes"


def _drop_debug_notes(proto: onnx.ModelProto) -> None:
    """Remove the exporter's other per-node notes (source line, FX node, class hierarchy):
    about half of an INT8 detector's file, and of no use to a runtime."""
    for node in proto.graph.node:
        kept = [(p.key, p.value) for p in node.metadata_props if p.key == _KEPT_NOTE]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)


def _export_context(model: nn.Module) -> contextlib.AbstractContextManager:
    """The model's own ``export_context()`` if it has one, else nothing to enter."""
    hook = getattr(model, "export_context", None)
    return hook() if callable(hook) else contextlib.nullcontext()


def _forward_arg_names(model: nn.Module) -> list[str]:
    import inspect

    params = inspect.signature(model.forward).parameters
    return [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@contextlib.contextmanager
def quiet_export():
    """Silence the exporter's progress prints and warnings (errors still propagate)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
