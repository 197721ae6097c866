"""Detection data in COCO format: a folder of images and an ``instances.json``.

:func:`load_coco` reads and checks the whole annotation file up front (every image exists and
decodes, every box lies inside its image and has an area, every category id is declared), so
a mistake in the data stops the run before training, naming the file, the entry and the fix.
COCO category ids (any integers) become contiguous labels ``1..K`` in the order of their ids,
0 being the background as in torchvision's detectors. Crowd annotations (``iscrowd: 1``) are
left out. :func:`write_coco` writes any detection set in the same format (the generated shapes
set, for instance), so the two round-trip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deploykit.data.images import decode_images
from deploykit.errors import DataError
from deploykit.runfiles.atomic import write_text

__all__ = ["CocoDetection", "load_coco", "write_coco"]

_BOX_SLACK = 1.0   # pixels a box may pass the image border by (rounding in exporters)


@dataclass
class CocoDetection(torch.utils.data.Dataset):
    """Images and their annotations: item ``i`` is ``(image uint8 (3, H, W), {"boxes" (N, 4)
    x0 y0 x1 y1 float, "labels" (N,) int64})``; images are decoded when asked for."""

    files: list[Path]
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import numpy as np
        from PIL import Image

        with Image.open(self.files[i]) as im:
            img = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy())
        return img.permute(2, 0, 1), {"boxes": self.boxes[i], "labels": self.labels[i]}


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found; a COCO set is a folder with the "
                        "images and an instances.json (set data.annotations to its path)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a JSON file ({e}); expected COCO instances JSON") from None
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError(f"{path}: not COCO instances JSON: it needs lists 'images', "
                        "'annotations' and 'categories'")
    if not data["images"] or not data["annotations"]:
        raise DataError(f"{path}: empty ({len(data['images'])} images, "
                        f"{len(data['annotations'])} annotations); nothing to train or evaluate "
                        "on: point data.annotations at the file with the annotations")
    return data


def _entry(path: Path, kind: str, i: int, item: Any, keys: Sequence[str]) -> dict[str, Any]:
    if not isinstance(item, dict) or any(k not in item for k in keys):
        raise DataError(f"{path}: {kind}[{i}] must be an object with {list(keys)}; got "
                        f"{str(item)[:80]}")
    return item


def load_coco(root: str | Path, annotations: str | Path | None = None,
              skip_corrupt: bool = False) -> CocoDetection:
    """Read a COCO detection set: images under ``root``, annotations in ``annotations``
    (default ``root/instances.json``).

    Raises:
        DataError: the file is missing, not COCO JSON, empty; an annotation names an unknown
            image or category, or has a box outside its image or without area; an image is
            missing or cannot be decoded (with ``skip_corrupt``: skipped and counted instead).
    """
    root = Path(root)
    path = Path(annotations) if annotations is not None else root / "instances.json"
    data = _read(path)
    cats = sorted((_entry(path, "categories", i, c, ("id", "name"))
                   for i, c in enumerate(data["categories"])), key=lambda c: c["id"])
    label_of = {c["id"]: k + 1 for k, c in enumerate(cats)}
    names = [c["name"] for c in cats]
    images = {}
    for i, im in enumerate(data["images"]):
        im = _entry(path, "images", i, im, ("id", "file_name", "width", "height"))
        images[im["id"]] = im
    per_image: dict[Any, list[tuple[list[float], int]]] = {k: [] for k in images}
    for i, ann in enumerate(data["annotations"]):
        ann = _entry(path, "annotations", i, ann, ("image_id", "category_id", "bbox"))
        where = f"{path}: annotations[{i}] (id {ann.get('id', '?')})"
        if ann["image_id"] not in images:
            raise DataError(f"{where}: image_id {ann['image_id']} is not in 'images'; add the "
                            "image or remove the annotation")
        if ann["category_id"] not in label_of:
            raise DataError(f"{where}: category_id {ann['category_id']} is not declared in "
                            f"'categories' (ids {sorted(label_of)}); fix the id or declare it")
        if ann.get("iscrowd", 0):
            continue
        im = images[ann["image_id"]]
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            raise DataError(f"{where}: bbox {ann['bbox']} has no area (COCO boxes are "
                            "[x, y, width, height]); fix or remove it")
        if x < -_BOX_SLACK or y < -_BOX_SLACK or x + w > im["width"] + _BOX_SLACK \
                or y + h > im["height"] + _BOX_SLACK:
            raise DataError(f"{where}: bbox {ann['bbox']} lies outside its image "
                            f"{im['file_name']} ({im['width']}x{im['height']}); COCO boxes are "
                            "[x, y, width, height] in pixels: fix the box or the image size")
        box = [max(x, 0.0), max(y, 0.0), min(x + w, im["width"]), min(y + h, im["height"])]
        per_image[ann["image_id"]].append((box, label_of[ann["category_id"]]))
    files = {k: root / im["file_name"] for k, im in images.items()}
    missing = [p for p in files.values() if not p.is_file()]
    bad = {p: "file not found" for p in missing}
    _, undecodable = decode_images([p for p in files.values() if p.is_file()], None,
                                   "checking images")
    bad.update(undecodable)
    if bad and not skip_corrupt:
        first, why = next(iter(bad.items()))
        raise DataError(f"{path}: {len(bad)} of {len(files)} images cannot be read (first: "
                        f"{first}: {why}). Fix: restore them, or set data.skip_corrupt: true "
                        "to leave them out (the count is reported)")
    keep = [k for k in images if files[k] not in bad]
    return CocoDetection(
        files=[files[k] for k in keep],
        boxes=[torch.tensor([b for b, _ in per_image[k]], dtype=torch.float32).reshape(-1, 4)
               for k in keep],
        labels=[torch.tensor([c for _, c in per_image[k]], dtype=torch.int64) for k in keep],
        class_names=names)


def write_coco(dataset: torch.utils.data.Dataset, out: str | Path, class_names: Sequence[str]
               ) -> Path:
    """Write ``dataset`` (items ``(uint8 image, {"boxes", "labels"})``, labels ``1..K``) as
    PNG images and ``instances.json`` under ``out``; returns the JSON's path."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(len(dataset)):
        img, target = dataset[i]
        name = f"{i:06d}.png"
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(out / name)
        images.append({"id": i, "file_name": name, "width": img.shape[2],
                       "height": img.shape[1]})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            x0, y0, x1, y1 = box
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                         "iscrowd": 0})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]
    return write_text(out / "instances.json", json.dumps(
        {"images": images, "annotations": anns, "categories": cats}))
