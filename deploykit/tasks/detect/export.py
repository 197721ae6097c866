"""Export a torchvision detector as one deployable ONNX graph: image in, final boxes, scores
and labels out (resize, network, box decoding and NonMaxSuppression inside the graph).

The batch is fixed at one image (``images``: ``(1, 3, H, W)``, float in 0..1, any height and
width: the graph resizes as the detector does): the number of
detections differs per image, so a batched end-to-end graph would need padding conventions of
its own. The TorchScript-based exporter is used (``dynamo=False``): torchvision's batched NMS
becomes an ONNX ``If`` around ``NonMaxSuppression``, which the dynamo exporter cannot express
(data-dependent shapes). A model that yields no detection while it is traced can lose its NMS
branch silently, so the export first checks that the example images give detections.

A detector with a fixed input size (SSD, SSDlite) is exported in three parts joined into one
graph with ``onnx.compose`` (:func:`export_detector_split`): the resize, the network, and the
decoding + NMS with the anchors as constants. The network part goes through the dynamo
exporter, which writes an INT8 network's explicit QuantizeLinear/DequantizeLinear; the same
network file is the one timed alone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from onnx import compose
from torch import nn

from deploykit.export.onnx import ExportError, export_onnx, quiet_export
from deploykit.runfiles.atomic import atomic_path
from deploykit.tasks.detect.models import backbone_features

__all__ = ["DETECTION_INPUT", "DETECTION_OUTPUTS", "EndToEnd", "export_detector",
           "export_detector_split", "export_network", "fixed_input_size"]

DETECTION_INPUT = "images"
DETECTION_OUTPUTS = ("boxes", "scores", "labels")


class EndToEnd(nn.Module):
    """A torchvision detector as ``(1, 3, H, W) -> boxes (N, 4), scores (N,), labels (N,)``:
    what the end-to-end artifact computes, for the PyTorch runtimes to run in its place."""

    output_names = DETECTION_OUTPUTS

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
    wrapped = EndToEnd(model)
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


def export_network(network: nn.Module, input_hw: int | tuple[int, int], path: str | Path,
                   opset: int = 17) -> Path:
    """Export a detector's network alone (:class:`~deploykit.tasks.detect.models.DetectorNetwork`:
    the resized, normalised batch in, the head's outputs out) with a dynamic batch axis, to
    time it apart from the resize, decoding and NMS around it. ``input_hw``: the height and
    width of the batch the detector's resize gives (padded to its size divisor), or one
    number for a square."""
    path = Path(path)
    was_training = network.training
    network.eval()
    h, w = (input_hw, input_hw) if isinstance(input_hw, int) else input_hw
    x = torch.zeros(1, 3, h, w)
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


def fixed_input_size(model: nn.Module) -> int | None:
    """The square size an SSD-style detector resizes every image to (its anchors are then
    fixed), or ``None`` for a detector that keeps the aspect ratio."""
    size = getattr(getattr(model, "transform", None), "fixed_size", None)
    if size is None or size[0] != size[1] or not hasattr(model, "anchor_generator") \
            or not hasattr(model, "postprocess_detections"):
        return None
    return int(size[0])


class _Resize(nn.Module):
    """``(1, 3, H, W)`` in 0..1 -> the detector's resized, normalised batch and ``[H, W]``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.transform = detector.transform

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _ = self.transform([images[0]])
        return batch.tensors, torch._shape_as_tensor(images)[2:]


class _Decode(nn.Module):
    """The head outputs and ``[H, W]`` -> boxes (in the original image), scores, labels."""

    def __init__(self, detector: nn.Module, keys: Sequence[str], anchors: torch.Tensor,
                 size: int, levels: Sequence[int] | None = None) -> None:
        super().__init__()
        self.detector, self.keys, self.size = detector, tuple(keys), size
        self.levels = None if levels is None else [int(n) for n in levels]
        self.register_buffer("anchors", anchors)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        *heads, hw = args
        if self.levels is None:   # SSD: all anchors in one tensor
            outs, anchors = dict(zip(self.keys, heads, strict=True)), [self.anchors]
        else:                     # RetinaNet / FCOS: split per feature level
            outs = {k: list(h.split(self.levels, dim=1))
                    for k, h in zip(self.keys, heads, strict=True)}
            anchors = [list(self.anchors.split(self.levels))]
        out = self.detector.postprocess_detections(outs, anchors, [(self.size, self.size)])[0]
        ratio = hw.to(torch.float32) / self.size
        return (out["boxes"] * torch.stack([ratio[1], ratio[0], ratio[1], ratio[0]]),
                out["scores"], out["labels"])


def _anchors_per_level(model: nn.Module, feats: Sequence[torch.Tensor], total: int
                       ) -> list[int] | None:
    """Anchors per feature level for a detector whose decoding takes its head outputs split
    by level (RetinaNet, FCOS); ``None`` for one that takes them whole (SSD)."""
    if not any(c.__name__ in ("RetinaNet", "FCOS") for c in type(model).__mro__):
        return None
    cells = [f.shape[-2] * f.shape[-1] for f in feats]
    per_cell = total // sum(cells)
    return [c * per_cell for c in cells]


def _script_export(module: nn.Module, args: tuple, path: Path, opset: int,
                   inputs: list[str], outputs: list[str], dynamic: dict | None = None) -> None:
    torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=opset,
                      input_names=inputs, output_names=outputs, dynamic_axes=dynamic)


def export_detector_split(model: nn.Module, network: nn.Module, examples: Sequence[torch.Tensor],
                          path: str | Path, network_path: str | Path, opset: int = 18
                          ) -> tuple[Path, Path]:
    """Export a fixed-size detector end to end as resize + ``network`` + decoding/NMS (see the
    module notes) to ``path``, and ``network`` alone (dynamic batch) to ``network_path``.

    Args:
        model: the detector (float or INT8; eval mode is set and restored).
        network: what runs between resize and decoding: the resized batch in, the head
            outputs out (``deploykit.tasks.detect.network_quant.runtime_network(model)``).
        examples: ``(3, H, W)`` images in 0..1; the first that yields detections is traced.
        opset: ONNX opset of all three parts (18 or newer: the dynamo exporter's minimum).

    Raises:
        ExportError: not a fixed-size detector, no example yields a detection, or an
            exporter, the merge or the checker fails.
    """
    path, network_path = Path(path), Path(network_path)
    size = fixed_input_size(model)
    if size is None:
        raise ExportError(f"{type(model).__name__} does not resize to a fixed square size; "
                          "only SSD-style detectors export in parts (use export_detector)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            example = next((x for x in examples if len(model([x])[0]["boxes"]) > 0), None)
            if example is None:
                raise ExportError(
                    f"{type(model).__name__} gives no detection above its score threshold on "
                    f"any of {len(examples)} example images, so NonMaxSuppression could be "
                    "traced away; export a trained (or BatchNorm-calibrated) model, or lower "
                    "its score_thresh")
            batch, _ = model.transform([example])
            feats = backbone_features(model, batch.tensors)
            anchors = model.anchor_generator(batch, feats)[0]
            keys = list(model.head(feats).keys())
            heads = network(batch.tensors)
        names = [f"head{i}" for i in range(len(heads))]
        levels = _anchors_per_level(model, feats, heads[0].shape[1])
        export_onnx(network, tuple(batch.tensors.shape[1:]), network_path, opset,
                    output_names=names)
        with tempfile.TemporaryDirectory() as tmpdir, quiet_export():
            tmp = Path(tmpdir)
            _script_export(_Resize(model), (example[None],), tmp / "resize.onnx", opset,
                           [DETECTION_INPUT], ["batch", "hw"],
                           {DETECTION_INPUT: {2: "height", 3: "width"}})
            hw = torch.tensor(example.shape[-2:])
            _script_export(_Decode(model, keys, anchors, size, levels), (*heads, hw),
                           tmp / "decode.onnx", opset, [*names, "hw"], list(DETECTION_OUTPUTS))
            parts = [onnx.load(str(p)) for p in
                     (tmp / "resize.onnx", network_path, tmp / "decode.onnx")]
        ir = min(p.ir_version for p in parts)
        resize, net, decode = (compose.add_prefix(p, f"{tag}/", rename_inputs=False,
                                                  rename_outputs=False)
                               for p, tag in zip(parts, ("resize", "network", "decode"),
                                                 strict=True))
        for p in (resize, net, decode):
            p.ir_version = ir
        joined = compose.merge_models(resize, net, io_map=[("batch", "input")])
        joined = compose.merge_models(joined, decode,
                                      io_map=[*((n, n) for n in names), ("hw", "hw")])
        with atomic_path(path) as tmp_path:
            onnx.save(joined, str(tmp_path))
            onnx.checker.check_model(str(tmp_path), full_check=True)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"ONNX export of detector {type(model).__name__} in parts failed: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                          ) from e
    finally:
        model.train(was_training)
    return path, network_path
