"""The files a recipe names, checked when it loads (``load_recipe(check_paths=True)``), so a
typo in a path fails before any work, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploykit.errors import RecipeError

__all__ = ["check_paths_exist", "class_folders", "folder_class_count"]


def class_folders(split: Path) -> list[str]:
    """The class folders of an image-folder split, sorted (hidden folders are not classes)."""
    return sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_class_count(root: Path | None) -> int | None:
    """How many class folders ``root/train`` holds (hidden ones not counted); ``None`` when
    there is no such folder, or it cannot be read (the path checks and the data loader then
    say what is wrong)."""
    if root is None:
        return None
    try:
        train = root / "train"
        if not train.is_dir():
            return None
        n = len(class_folders(train))
    except (OSError, ValueError):
        return None
    return n or None


def check_paths_exist(recipe: Any, source: str) -> None:
    """Every file and folder ``recipe`` names exists: data.root (and its train/ folder, or
    each COCO split's images and annotations), model.weights and model.checkpoint, teacher
    checkpoints and the gate's baseline report.

    Raises:
        RecipeError: naming ``source``, the key and the fix.
    """
    data = recipe.data
    root = data.root
    if data.kind == "coco" and data.splits is not None:
        base = root if root is not None else Path()
        for split in ("train", "val"):
            part = getattr(data.splits, split)
            if not (base / part.images).is_dir():
                raise RecipeError(f"{source}: data.splits.{split}.images: folder "
                                  f"{str(base / part.images)!r} does not exist (relative paths "
                                  "are taken from data.root)")
            if not (base / part.annotations).is_file():
                raise RecipeError(f"{source}: data.splits.{split}.annotations: file "
                                  f"{str(base / part.annotations)!r} does not exist (relative "
                                  "paths are taken from data.root)")
    elif data.kind == "coco" and root is not None and not root.is_dir():
        raise RecipeError(f"{source}: data.root: folder {str(root)!r} does not exist (resolved "
                          f"to {root.resolve()}); point it at a folder holding train/ and val/, "
                          "each with instances.json and its images, or use kind: shapes")
    if data.kind == "imagefolder" and root is not None:
        if not root.is_dir():
            raise RecipeError(
                f"{source}: data.root: folder {str(root)!r} does not exist (resolved to "
                f"{root.resolve()}; relative paths are taken from the current directory). "
                "Point data.root at a folder holding train/<class>/ images, or use kind: digits")
        if not (root / "train").is_dir():
            raise RecipeError(f"{source}: data.root: {root} has no train/ folder; expected "
                              "root/train/<class>/*.jpg and root/val (or root/test)")
    weights = recipe.model.weights
    if weights is not None and not weights.is_file():
        raise RecipeError(f"{source}: model.weights: file {str(weights)!r} does not exist "
                          f"(resolved to {weights.resolve()}); point it at a state dict "
                          "(torch.save(model.state_dict(), path)) or remove the key")
    ckpt = recipe.model.checkpoint
    if ckpt is not None and not ckpt.is_file():
        raise RecipeError(f"{source}: model.checkpoint: file {str(ckpt)!r} does not exist "
                          f"(resolved to {ckpt.resolve()}); fix the path or set it to null "
                          "to train a baseline")
    for i, stage in enumerate(recipe.stages):
        for j, path in enumerate(getattr(getattr(stage, "teacher", None), "checkpoints", [])):
            if not path.is_file():
                raise RecipeError(f"{source}: stages[{i}].teacher.checkpoints[{j}]: file "
                                  f"{str(path)!r} does not exist (resolved to {path.resolve()}); "
                                  "fix the path, or remove it to distil from the baseline")
    gates = recipe.gates
    if gates is not None and gates.baseline is not None and not gates.baseline.is_file():
        raise RecipeError(f"{source}: gates.baseline: report {str(gates.baseline)!r} does not "
                          "exist; point it at an earlier run's report.json or remove the key")
    if ckpt is None and recipe.train is None:
        raise RecipeError(f"{source}: model.checkpoint is null and train is null: give a "
                          "checkpoint or a train section so there is a baseline to compress")
