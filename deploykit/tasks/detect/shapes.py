"""A generated object-detection set: coloured shapes on textured backgrounds, no downloads.

Each image is drawn from its own seed (the set's seed and the image's index), so image ``i`` is
the same on every machine and nothing is stored. A scene holds one to ``max_objects`` shapes of
``len(CLASSES)`` kinds, with sizes log-uniform from small to large and random aspect ratios.
Later shapes are drawn over earlier ones, and a placement is redrawn when it would hide more
than ``max_occlusion`` of an earlier shape, so every annotated shape is visible. A shape's box
is the tight box of all its pixels, hidden ones included, as COCO annotates; boxes are
``(x0, y0, x1, y1)`` in pixels, ends exclusive. Labels follow torchvision's detection
convention: 1 to ``len(CLASSES)``, 0 being the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CLASSES", "Scene", "ShapesDetection", "render_scene"]

CLASSES = ("circle", "square", "triangle", "diamond", "cross")
_TRIES = 30


@dataclass(frozen=True)
class Scene:
    """One generated image and its annotations.

    Attributes:
        image: ``(3, H, W)`` uint8.
        boxes: ``(N, 4)`` float32, ``x0, y0, x1, y1`` in pixels, ends exclusive.
        labels: ``(N,)`` int64 in ``1..len(CLASSES)``.
        colors: ``(N, 3)`` uint8: each shape is filled with one colour, distinct in the scene.
    """

    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    colors: torch.Tensor


def _mask(kind: int, size: int, cx: float, cy: float, r: float, aspect: float) -> np.ndarray:
    """The pixels (centres) inside shape ``kind`` centred at ``(cx, cy)``, half-size ``r``."""
    grid = np.arange(size) + 0.5
    u = (grid[None, :] - cx) / (r * aspect)
    v = (grid[:, None] - cy) / (r / aspect)
    name = CLASSES[kind]
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if name == "triangle":   # apex up
        return (v >= -1.0) & (v <= 0.8) & (np.abs(u) <= (v + 1.0) / 1.8)
    if name == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A two-colour gradient in a random direction plus pixel noise, ``(H, W, 3)`` float."""
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    grid = (np.arange(size) + 0.5) / size
    t = np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None]
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = a + (b - a) * t[..., None]
    return img + rng.normal(0, 12, img.shape)


def render_scene(seed: int | tuple[int, ...], size: int = 160, max_objects: int = 6,
                 min_frac: float = 0.08, max_frac: float = 0.5, max_occlusion: float = 0.5
                 ) -> Scene:
    """Draw one scene, deterministically from ``seed``.

    Args:
        seed: anything :func:`numpy.random.default_rng` takes (``(set_seed, index)``).
        size: the image's side in pixels.
        max_objects: shapes per image at most (at least one is always drawn).
        min_frac, max_frac: a shape's side, as a fraction of ``size`` (log-uniform between).
        max_occlusion: the largest fraction of a shape that later shapes may hide.
    """
    rng = np.random.default_rng(seed)
    img = _background(rng, size)
    owner = np.full((size, size), -1)
    areas: list[int] = []
    boxes, labels, colors = [], [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(_TRIES):
            kind = int(rng.integers(len(CLASSES)))
            side = size * float(np.exp(rng.uniform(np.log(min_frac), np.log(max_frac))))
            aspect = float(np.exp(rng.uniform(-0.3, 0.3)))
            r = side / 2
            half_w, half_h = r * aspect, r / aspect
            if 2 * half_w >= size - 2 or 2 * half_h >= size - 2:
                continue
            cx = rng.uniform(half_w + 1, size - half_w - 1)
            cy = rng.uniform(half_h + 1, size - half_h - 1)
            mask = _mask(kind, size, cx, cy, r, aspect)
            if mask.sum() < 4:
                continue
            color = rng.integers(0, 256, 3)
            if any(np.abs(color.astype(int) - c).sum() < 60 for c in colors):
                continue   # distinct colours: every shape can be told apart by its fill
            if np.abs(img[mask].mean(0) - color).sum() < 90:
                continue   # and it stands out from what it is drawn on
            left = np.where(mask, -1, owner)   # what each earlier shape shows once it is drawn
            visible = np.bincount(left[left >= 0], minlength=len(areas))
            if np.any(visible < (1 - max_occlusion) * np.array(areas)):
                continue
            owner[mask] = len(areas)
            img[mask] = color
            areas.append(int(mask.sum()))
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(kind + 1)
            colors.append(color.astype(np.uint8))
            break
    return Scene(
        image=torch.from_numpy(np.clip(np.rint(img), 0, 255).astype(np.uint8)).permute(2, 0, 1)
        .contiguous(),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
        colors=torch.from_numpy(np.array(colors, dtype=np.uint8).reshape(-1, 3)))


class ShapesDetection(torch.utils.data.Dataset):
    """``n`` generated scenes: item ``i`` is ``(image uint8 (3, H, W), {"boxes", "labels"})``,
    drawn from seed ``(seed, i)`` when asked for, so the set costs no memory and no disk."""

    def __init__(self, n: int, size: int = 160, seed: int = 0, **scene: float) -> None:
        self.n, self.size, self.seed, self.scene = n, size, seed, scene

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        s = render_scene((self.seed, i), self.size, **self.scene)
        return s.image, {"boxes": s.boxes, "labels": s.labels}
