"""COCO mean average precision of detections, through torchmetrics (never computed by hand).

torchmetrics' ``MeanAveragePrecision`` runs the COCO evaluation with the ``faster_coco_eval``
backend: it matches pycocotools' protocol (101-point interpolation, IoU thresholds .50:.05:.95,
at most 100 detections per image) and is several times faster; the two backends can differ in
the third decimal on imperfect predictions, so every result names its backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from deploykit.errors import BackendUnavailableError, DataError

__all__ = ["BACKEND", "MapResult", "evaluate_detector", "mean_average_precision"]

BACKEND = "faster_coco_eval"
Detections = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MapResult:
    """COCO mAP@[.5:.95] and mAP@.5, in percentage points, over ``images`` images."""

    map_pct: float
    map50_pct: float
    images: int
    backend: str = BACKEND


def _check(item: Detections, keys: tuple[str, ...], what: str, i: int) -> None:
    missing = [k for k in keys if k not in item]
    if missing:
        raise DataError(f"{what} of image {i}: missing {missing}; each is a dict with "
                        f"{list(keys)} (boxes as (N, 4) x0, y0, x1, y1 in pixels)")
    boxes = item["boxes"]
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise DataError(f"{what} of image {i}: boxes have shape {tuple(boxes.shape)}, "
                        "expected (N, 4) x0, y0, x1, y1")
    for k in keys[1:]:
        if len(item[k]) != len(boxes):
            raise DataError(f"{what} of image {i}: {len(boxes)} boxes but {len(item[k])} {k}")


def mean_average_precision(predictions: Iterable[Detections], targets: Iterable[Detections]
                           ) -> MapResult:
    """COCO mAP of ``predictions`` (``boxes``, ``scores``, ``labels`` per image) against
    ``targets`` (``boxes``, ``labels``), boxes as ``x0, y0, x1, y1`` in pixels.

    Raises:
        DataError: the lists differ in length, or an entry lacks a key or has mismatched sizes.
        BackendUnavailableError: torchmetrics or faster-coco-eval is not installed.
    """
    preds, targs = list(predictions), list(targets)
    if len(preds) != len(targs):
        raise DataError(f"mAP: {len(preds)} predictions for {len(targs)} images")
    for i, (p, t) in enumerate(zip(preds, targs, strict=True)):
        _check(p, ("boxes", "scores", "labels"), "prediction", i)
        _check(t, ("boxes", "labels"), "target", i)
    try:
        from torchmetrics.detection import MeanAveragePrecision
        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=BACKEND)
        metric.warn_on_many_detections = False   # COCO counts the top 100 per image
    except ImportError as e:
        raise BackendUnavailableError(
            f"mAP needs torchmetrics with the {BACKEND} backend ({e}); "
            "pip install torchmetrics faster-coco-eval") from e
    as_float = [{k: (v.float() if k != "labels" else v.long()) for k, v in d.items()}
                for d in preds]
    metric.update(as_float, [{"boxes": t["boxes"].float(), "labels": t["labels"].long()}
                             for t in targs])
    out = metric.compute()
    return MapResult(map_pct=max(0.0, 100 * float(out["map"])),
                     map50_pct=max(0.0, 100 * float(out["map_50"])), images=len(targs))


@torch.no_grad()
def evaluate_detector(model: nn.Module, loader: Iterable, device: str | torch.device = "cpu"
                      ) -> dict[str, float]:
    """mAP@[.5:.95] and mAP@.5 (``map_pct``, ``map50_pct``) of torchvision detector ``model``
    over ``loader``'s ``(images, targets)`` batches, in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    preds, targs = [], []
    for images, targets in loader:
        out = model([im.to(device) for im in images])
        preds += [{k: v.cpu() for k, v in o.items()} for o in out]
        targs += targets
    model.train(was_training)
    if not targs:
        return {"map_pct": float("nan"), "map50_pct": float("nan")}
    r = mean_average_precision(preds, targs)
    return {"map_pct": r.map_pct, "map50_pct": r.map50_pct}
