"""Classification data: the bundled digits set, image folders, synthetic tensors; train,
validation and calibration loaders.

Small images are held in memory as uint8 tensors and augmented a whole batch at a time (random
crop with zero padding, optional horizontal flip), which keeps 2-core machines busy training
instead of decoding JPEGs. Large image folders stream through torchvision's ``ImageFolder``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deploykit.data.images import decode_images
from deploykit.errors import DataError
from deploykit.recipe import DataSpec
from deploykit.recipe.paths import class_folders

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Loaders", "TensorLoader", "build_loaders"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_MAX_CACHE_BYTES = 4 * 1024**3


class TensorLoader:
    """Batches of normalised float images from an in-memory uint8 tensor ``(N, 3, H, W)``.

    Args:
        images: uint8 images.
        labels: int64 labels.
        batch_size: images per batch.
        mean, std: per-channel normalisation (on the 0-1 scale).
        shuffle: reshuffle each epoch (seeded: ``seed + epoch``).
        pad: zero padding for random crops (0 disables cropping).
        flip: random horizontal flips.
        drop_last: drop a final partial batch (training).
        seed: base seed for shuffling and augmentation.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], shuffle: bool = False,
                 pad: int = 0, flip: bool = False, drop_last: bool = False, seed: int = 0):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.pad, self.flip = batch_size, shuffle, pad, flip
        self.drop_last, self.seed = drop_last, seed
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255.0
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration's order and augmentation depend on ``epoch`` (resume-safe)."""
        self.epoch = epoch

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.pad:
            p = self.pad
            padded = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
            rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1)
            x = padded.gather(2, rows.expand(n, 3, h, w + 2 * p))
            cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w)
            x = x.gather(3, cols.expand(n, 3, h, w))
        if self.flip:
            mask = torch.rand(n, generator=gen) < 0.5
            x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
        return x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx].float()
            if self.pad or self.flip:
                x = self._augment(x, gen)
            yield (x - self.mean) / self.std, self.labels[idx]


@dataclass
class Loaders:
    """What every stage receives: train/val/calibration batches and the data's shape."""

    train: Any
    val: Any
    calib: Any
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: list[str] = field(default_factory=list)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def _subset(n: int, limit: int | None, seed: int) -> torch.Tensor:
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


def _digits(spec: DataSpec, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                  torch.Tensor, list[str]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8) in 0..1
    x = F.interpolate(x, size=(spec.image_size, spec.image_size), mode="bilinear",
                      align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target.astype(np.int64))
    tr, va = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=d.target)
    names = [str(i) for i in range(10)]
    return x[tr], y[tr], x[va], y[va], names


def _synthetic(spec: DataSpec, num_classes: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Learnable random data: each class is a fixed random template plus noise."""
    gen = torch.Generator().manual_seed(seed)
    s = spec.image_size
    templates = torch.rand(num_classes, 3, s, s, generator=gen) * 255
    n = spec.synthetic_samples
    y = torch.randint(0, num_classes, (n,), generator=gen)
    noise = torch.randn(n, 3, s, s, generator=gen) * 30
    x = (templates[y] + noise).clamp(0, 255).to(torch.uint8)
    n_val = max(n // 5, 1)
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def _list_images(split_dir: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(p for p in (split_dir / c).iterdir() if p.suffix.lower() in _IMG_EXT)
        if not files:
            raise DataError(f"data.root: class folder {split_dir / c} holds no images "
                            f"({', '.join(sorted(_IMG_EXT))}); add its images or remove the "
                            "class (from train/ and val/ alike)")
        paths += files
        labels += [i] * len(files)
    return paths, labels


def _corrupt(spec: DataSpec, bad: dict[Path, str], total: int) -> None:
    """Stop on undecodable images, or (``data.skip_corrupt``) say how many are skipped."""
    if not bad:
        return
    first, why = next(iter(bad.items()))
    if not spec.skip_corrupt:
        raise DataError(f"data.root: {len(bad)} of {total} images cannot be decoded (first: "
                        f"{first}: {why}). Fix: replace or remove them, or set "
                        "data.skip_corrupt: true to skip them (the count is reported)")
    from deploykit.host.progress import log

    log(f"data: skipping {len(bad)} of {total} images that cannot be decoded (first: {first}: "
        f"{why})")


def _imagefolder_split_dirs(root: Path) -> tuple[Path, Path, list[str]]:
    train_dir = root / "train"
    val_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if val_dir is None:
        raise DataError(f"data.root: {root} has no val/ or test/ folder; deploykit reports "
                        "accuracy on held-out images: add root/val/<class>/*")
    classes = class_folders(train_dir)
    if not classes:
        raise DataError(f"data.root: {train_dir} has no class folders (expected train/<class>/*)")
    val_classes = class_folders(val_dir)
    if val_classes != classes:
        raise DataError(f"data.root: class folders differ between {train_dir} and {val_dir}: "
                        f"{sorted(set(classes) ^ set(val_classes))}")
    return train_dir, val_dir, classes


def _loaders_from_tensors(spec: DataSpec, seed: int, xtr: torch.Tensor, ytr: torch.Tensor,
                          xva: torch.Tensor, yva: torch.Tensor, num_classes: int,
                          names: list[str], mean: tuple[float, float, float],
                          std: tuple[float, float, float], flip: bool) -> Loaders:
    tr = _subset(len(ytr), spec.limit_train, seed)
    va = _subset(len(yva), spec.limit_val, seed + 1)
    xtr, ytr, xva, yva = xtr[tr], ytr[tr], xva[va], yva[va]
    pad = max(spec.image_size // 8, 1) if spec.augment else 0
    train = TensorLoader(xtr, ytr, spec.batch_size, mean, std, shuffle=True, pad=pad,
                         flip=flip and spec.augment, drop_last=len(ytr) > spec.batch_size,
                         seed=seed)
    val = TensorLoader(xva, yva, spec.eval_batch_size, mean, std)
    calib_idx = _subset(len(ytr), spec.calib_samples, seed + 2)
    calib = TensorLoader(xtr[calib_idx], ytr[calib_idx], min(32, spec.batch_size), mean, std)
    return Loaders(train, val, calib, num_classes, (3, spec.image_size, spec.image_size),
                   names, mean, std)


def _imagefolder_streaming(spec: DataSpec, seed: int, train_dir: Path, val_dir: Path,
                           classes: list[str], mean: tuple[float, float, float],
                           std: tuple[float, float, float], bad: set[str]) -> Loaders:
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    s = spec.image_size
    norm = transforms.Normalize(mean, std)
    aug = [transforms.RandomResizedCrop(s), transforms.RandomHorizontalFlip()] if spec.augment \
        else [transforms.Resize(s), transforms.CenterCrop(s)]
    train_tf = transforms.Compose([*aug, transforms.ToTensor(), norm])
    eval_tf = transforms.Compose([transforms.Resize(int(s * 256 / 224)), transforms.CenterCrop(s),
                                  transforms.ToTensor(), norm])
    def ok(p: str) -> bool:   # what the scan decoded; a file that fails later still raises
        return Path(p).suffix.lower() in _IMG_EXT and p not in bad

    train_ds = datasets.ImageFolder(train_dir, train_tf, is_valid_file=ok)
    val_ds = datasets.ImageFolder(val_dir, eval_tf, is_valid_file=ok)
    calib_ds = datasets.ImageFolder(train_dir, eval_tf, is_valid_file=ok)
    train_ds = Subset(train_ds, _subset(len(train_ds), spec.limit_train, seed).tolist())
    val_ds = Subset(val_ds, _subset(len(val_ds), spec.limit_val, seed + 1).tolist())
    calib_ds = Subset(calib_ds, _subset(len(calib_ds), spec.calib_samples, seed + 2).tolist())
    kw = {"num_workers": spec.num_workers, "persistent_workers": spec.num_workers > 0}
    gen = torch.Generator().manual_seed(seed)
    return Loaders(
        DataLoader(train_ds, spec.batch_size, shuffle=True, drop_last=True, generator=gen, **kw),
        DataLoader(val_ds, spec.eval_batch_size, **kw),
        DataLoader(calib_ds, min(32, spec.batch_size)),
        len(classes), (3, s, s), classes, mean, std)


def build_loaders(spec: DataSpec, seed: int = 0, num_classes: int | None = None) -> Loaders:
    """Build train/val/calibration loaders for ``spec``.

    Args:
        spec: the recipe's data section.
        seed: seeds subsets, shuffling and augmentation.
        num_classes: the model's class count; checked against the data (synthetic data uses it).

    Raises:
        DataError: missing folders, empty classes, undecodable images (unless
            ``spec.skip_corrupt``), or a class-count mismatch.
    """
    flip = True
    if spec.kind == "digits":
        xtr, ytr, xva, yva, names = _digits(spec, seed)
        flip = False  # a mirrored digit is a different glyph
        n_cls = 10
        mean = spec.mean or tuple([float(xtr.float().mean() / 255)] * 3)
        std = spec.std or tuple([float(xtr.float().std() / 255)] * 3)
    elif spec.kind == "synthetic":
        n_cls = num_classes or 10
        xtr, ytr, xva, yva = _synthetic(spec, n_cls, seed)
        names = [str(i) for i in range(n_cls)]
        mean, std = spec.mean or (0.5, 0.5, 0.5), spec.std or (0.25, 0.25, 0.25)
    else:
        root = Path(spec.root or ".")
        train_dir, val_dir, names = _imagefolder_split_dirs(root)
        n_cls = len(names)
        mean, std = spec.mean or IMAGENET_MEAN, spec.std or IMAGENET_STD
        if num_classes is not None and n_cls != num_classes:
            raise DataError(f"data.root: {root} has {n_cls} classes but model.num_classes is "
                            f"{num_classes}; set model.num_classes: {n_cls}")
        tr_paths, tr_labels = _list_images(train_dir, names)
        va_paths, va_labels = _list_images(val_dir, names)
        if not tr_paths or not va_paths:
            raise DataError(f"data.root: no images under {train_dir} or {val_dir}")
        cache_bytes = (len(tr_paths) + len(va_paths)) * 3 * spec.image_size**2
        if not spec.cache or cache_bytes > _MAX_CACHE_BYTES:   # check every file up front
            _, bad = decode_images(tr_paths + va_paths, None, "checking images")
            _corrupt(spec, bad, len(tr_paths) + len(va_paths))
            return _imagefolder_streaming(spec, seed, train_dir, val_dir, names, mean, std,
                                          {str(p) for p in bad})
        tr = _subset(len(tr_paths), spec.limit_train, seed).tolist()
        va = _subset(len(va_paths), spec.limit_val, seed + 1).tolist()
        xtr, bad_tr = decode_images([tr_paths[i] for i in tr], spec.image_size,
                                    "decoding train images")
        xva, bad_va = decode_images([va_paths[i] for i in va], spec.image_size,
                                    "decoding val images")
        _corrupt(spec, {**bad_tr, **bad_va}, len(tr) + len(va))
        keep_tr = [j for j, i in enumerate(tr) if tr_paths[i] not in bad_tr]
        keep_va = [j for j, i in enumerate(va) if va_paths[i] not in bad_va]
        if not keep_tr or not keep_va:
            raise DataError(f"data.root: no decodable images left under {train_dir} or {val_dir}")
        xtr, xva = xtr[keep_tr], xva[keep_va]   # type: ignore[index]  (decoded: not None)
        ytr = torch.tensor([tr_labels[tr[j]] for j in keep_tr])
        yva = torch.tensor([va_labels[va[j]] for j in keep_va])
        spec = spec.model_copy(update={"limit_train": None, "limit_val": None})
    if num_classes is not None and n_cls != num_classes:
        raise DataError(f"data: the {spec.kind} data set has {n_cls} classes but "
                        f"model.num_classes is {num_classes}; set model.num_classes: {n_cls}")
    return _loaders_from_tensors(spec, seed, xtr, ytr, xva, yva, n_cls, names, mean, std, flip)
