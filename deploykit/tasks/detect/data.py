"""Batches for detectors: lists of images and of their box annotations.

A detection batch is ``(images, targets)``: ``images`` a list of ``(3, H, W)`` float tensors in
0..1 (torchvision's detectors resize and normalise inside the model), ``targets`` a list of
``{"boxes": (N, 4) x0 y0 x1 y1 pixels, "labels": (N,) int64 in 1..K}``. Training batches are
augmented box-aware through ``torchvision.transforms.v2`` (horizontal flip, photometric
distortion, zoom-out), seeded per epoch and image, so a resumed run sees the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from deploykit.data.classify import Loaders
from deploykit.errors import DataError
from deploykit.host.progress import log
from deploykit.tasks.detect.coco import load_coco
from deploykit.tasks.detect.shapes import CLASSES, ShapesDetection

__all__ = ["DEFAULT_SHAPES_TRAIN", "DEFAULT_SHAPES_VAL", "DetectionLoader",
           "build_detection_loaders"]

DEFAULT_SHAPES_TRAIN = 2000
DEFAULT_SHAPES_VAL = 300
Target = dict[str, torch.Tensor]


def _augmentation() -> Any:
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill=127, side_range=(1.0, 2.0), p=0.3),
        v2.RandomHorizontalFlip(p=0.5),
        v2.SanitizeBoundingBoxes(min_size=2),
    ])


class DetectionLoader:
    """Batches of ``(images, targets)`` (see the module notes) from ``dataset`` (items
    ``(uint8 (3, H, W), target)``).

    Args:
        dataset: a detection set; with ``cache`` its items are read once and kept in memory.
        batch_size: images per batch.
        shuffle: reshuffle each epoch (seeded: ``seed + epoch``).
        augment: box-aware augmentation (training).
        drop_last: drop a final partial batch.
        seed: base seed for shuffling and augmentation.
    """

    def __init__(self, dataset: Any, batch_size: int, shuffle: bool = False,
                 augment: bool = False, drop_last: bool = False, seed: int = 0,
                 cache: bool = True, desc: str = "images") -> None:
        self.batch_size, self.shuffle, self.drop_last, self.seed = (batch_size, shuffle,
                                                                    drop_last, seed)
        self.items = [dataset[i] for i in range(len(dataset))] if cache else None
        self.dataset = dataset
        self.transform = _augmentation() if augment else None
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def item(self, i: int) -> tuple[torch.Tensor, Target]:
        """Image ``i`` as float 0..1 with its target, not augmented."""
        img, target = self.items[i] if self.items is not None else self.dataset[i]
        return img.float() / 255.0, target

    def _augment(self, img: torch.Tensor, target: Target, seed: int
                 ) -> tuple[torch.Tensor, Target]:
        from torchvision import tv_tensors

        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY",
                                         canvas_size=tuple(img.shape[-2:]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out_img, out = self.transform(tv_tensors.Image(img),
                                          {"boxes": boxes, "labels": target["labels"]})
        return out_img.as_subclass(torch.Tensor), {
            "boxes": out["boxes"].as_subclass(torch.Tensor).float(), "labels": out["labels"]}

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[Target]]]:
        n = len(self.dataset)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        seeds = torch.randint(0, 2**31 - 1, (n,), generator=g).tolist()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            images, targets = [], []
            for i in order[start:start + self.batch_size]:
                img, target = self.items[i] if self.items is not None else self.dataset[i]
                if self.transform is not None:
                    img, target = self._augment(img, target, seeds[i])
                images.append(img.float() / 255.0)
                targets.append(target)
            yield images, targets


def coco_split_paths(spec: Any, split: str) -> tuple[Path, Path]:
    """The images folder and annotation file of ``split`` (``train``, ``val``): the recipe's
    ``data.splits`` (relative to ``data.root``), else ``root/<split>/instances.json``."""
    root = Path(spec.root) if spec.root is not None else Path()
    splits = getattr(spec, "splits", None)   # a data section from before data.splits: none
    if splits is None:
        return root / split, root / split / "instances.json"
    s = getattr(splits, split)
    return root / s.images, root / s.annotations


def _coco_split(spec: Any, split: str) -> Any:
    if getattr(spec, "splits", None) is not None:
        images, annotations = coco_split_paths(spec, split)
        return load_coco(images, annotations, skip_corrupt=spec.skip_corrupt)
    root = Path(spec.root)
    folder = root / split
    if not (folder / "instances.json").is_file():
        raise DataError(f"data.root: {folder}/instances.json not found; a COCO-format set is "
                        f"{root}/train/ and {root}/val/, each holding instances.json and the "
                        "images its file_name entries name (e.g. images/0001.jpg), or give "
                        "each split's images and annotation file as data.splits")
    return load_coco(folder, skip_corrupt=spec.skip_corrupt)


def build_detection_loaders(spec: Any, seed: int = 0, num_classes: int | None = None
                            ) -> Loaders:
    """Train/val/calibration loaders for a detection recipe's data section.

    ``kind: shapes`` generates the coloured-shapes set at ``image_size`` pixels
    (``limit_train`` / ``limit_val`` images, default 2000 / 300; the validation scenes come
    from another seed); ``kind: coco`` reads ``root/train`` and ``root/val`` (or the files
    ``data.splits`` names). The calibration
    set is the first ``calib_samples`` training images, not augmented.

    Raises:
        DataError: missing or invalid COCO files, or a class count that differs from
            ``num_classes``.
    """
    if spec.kind == "shapes":
        train = ShapesDetection(spec.limit_train or DEFAULT_SHAPES_TRAIN, spec.image_size, seed)
        val = ShapesDetection(spec.limit_val or DEFAULT_SHAPES_VAL, spec.image_size,
                              seed + 1_000_003)
        names = list(CLASSES)
    else:
        train, val = _coco_split(spec, "train"), _coco_split(spec, "val")
        names = train.class_names
        if val.class_names != names:
            where = {k: coco_split_paths(spec, k)[1] for k in ("train", "val")}
            raise DataError(f"data: {where['val']} declares categories {val.class_names} but "
                            f"{where['train']} declares {names}; use the same categories in "
                            "both")
    if num_classes is not None and len(names) != num_classes:
        raise DataError(f"data: the set has {len(names)} classes ({', '.join(names)}) but "
                        f"model.num_classes is {num_classes}; set model.num_classes: "
                        f"{len(names)}")
    log(f"detection data: {len(train)} train / {len(val)} val images, {len(names)} classes")
    cache = spec.kind == "shapes" or spec.cache
    train_loader = DetectionLoader(train, spec.batch_size, shuffle=True, augment=spec.augment,
                                   drop_last=len(train) >= spec.batch_size, seed=seed,
                                   cache=cache)
    val_loader = DetectionLoader(val, spec.eval_batch_size, cache=cache)
    calib = [train_loader.item(i)[0] for i in range(min(spec.calib_samples, len(train)))]
    return Loaders(train=train_loader, val=val_loader, calib=calib, num_classes=len(names),
                   input_shape=(3, spec.image_size, spec.image_size), class_names=names)
