"""Export a torchvision detector as one deployable ONNX graph: image in, final boxes, scores
and labels out (resize, network, box decoding and NonMaxSuppression inside the graph).

The batch is fixed at one image (``images``: ``(1, 3, H, W)``, float in 0..1, any height and
width: the graph resizes as the detector does): the number of
detections differs per image, so a batched end-to-end graph would need padding conventions of
its own. The TorchScript-based exporter is used (``dynamo=False``): torchvision's batched NMS
becomes an ONNX ``If`` around ``NonMaxSuppression``, which the dynamo exporter cannot express
(data-dependent shapes). A model that yields no detection while it is traced can lose its NMS
branch silently, so the export first checks that the example images give detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from deploykit.atomic import atomic_path
from deploykit.export.onnx import ExportError, quiet_export

__all__ = ["DETECTION_INPUT", "DETECTION_OUTPUTS", "export_detector", "export_network"]

DETECTION_INPUT = "images"
DETECTION_OUTPUTS = ("boxes", "scores", "labels")


class _EndToEnd(nn.Module):
    """A torchvision detector as ``(1, 3, H, W) -> boxes (N, 4), scores (N,), labels (N,)``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.detector([images[0]])[0]
        return out["boxes"], out["scores"], out["labels"]


def export_detector(model: nn.Module, examples: Sequence[torch.Tensor], path: str | Path,
                    opset: int = 17) -> Path:
    """Export ``model`` end to end (see the module notes) to ``path``, atomically, and check it
    with ``onnx.checker``.

    Args:
        model: a torchvision detector (eval mode is set for the export and restored).
        examples: ``(3, H, W)`` images in 0..1; the first that yields detections is traced.
        path: destination ``.onnx`` file.
        opset: ONNX opset.

    Raises:
        ExportError: no example yields a detection (so NMS could be traced away), or the
            exporter or checker fails.
    """
    path = Path(path)
    was_training = model.training
    model.eval()
    wrapped = _EndToEnd(model)
    try:
        with torch.no_grad():
            example = next((x for x in examples if len(wrapped(x[None])[0]) > 0), None)
        if example is None:
            raise ExportError(
                f"{type(model).__name__} gives no detection above its score threshold on any "
                f"of {len(examples)} example images, so NonMaxSuppression could be traced "
                "away; export a trained (or BatchNorm-calibrated) model, or lower its "
                "score_thresh")
        with atomic_path(path) as tmp, quiet_export():
            torch.onnx.export(wrapped, (example[None],), str(tmp), dynamo=False,
                              opset_version=opset, input_names=[DETECTION_INPUT],
                              output_names=list(DETECTION_OUTPUTS),
                              dynamic_axes={DETECTION_INPUT: {2: "height", 3: "width"}})
            onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"ONNX export of detector {type(model).__name__} failed: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                          ) from e
    finally:
        model.train(was_training)
    return path


def export_network(network: nn.Module, image_size: int, path: str | Path, opset: int = 17
                   ) -> Path:
    """Export a detector's network alone (:class:`~deploykit.models.detection.DetectorNetwork`:
    the resized, normalised batch in, the head's outputs out) with a dynamic batch axis, to
    time it apart from the resize, decoding and NMS around it."""
    path = Path(path)
    was_training = network.training
    network.eval()
    x = torch.zeros(1, 3, image_size, image_size)
    try:
        with torch.no_grad():
            names = [f"head{i}" for i in range(len(network(x)))]
        with atomic_path(path) as tmp, quiet_export():
            torch.onnx.export(network, (x,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=names,
                              dynamic_axes={"input": {0: "batch"},
                                            **{n: {0: "batch"} for n in names}})
            onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    except Exception as e:
        raise ExportError(f"ONNX export of the detector network failed: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from e
    finally:
        network.train(was_training)
    return path
