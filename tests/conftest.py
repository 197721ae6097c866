"""Shared fixtures: tiny models and in-memory data; nothing downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DEPLOYKIT_NO_PROGRESS", "1")
torch.set_num_threads(2)

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


@pytest.fixture
def tiny_recipe_dict() -> dict:
    """A recipe that trains a ResNet-20 on synthetic data for one short epoch."""
    return {
        "name": "tiny",
        "model": {"source": "builtin", "name": "resnet20", "num_classes": 4},
        "data": {"kind": "synthetic", "image_size": 16, "batch_size": 32,
                 "synthetic_samples": 160, "calib_samples": 32},
        "train": {"epochs": 1, "lr": 0.05, "schedule": "constant"},
        "bench": {"batch_sizes": [1, 4], "iterations": 5, "warmup": 1, "target_rel_ci": None},
    }


@pytest.fixture
def write_yaml(tmp_path: Path):
    import yaml

    def _write(data: dict, name: str = "recipe.yaml") -> Path:
        p = tmp_path / name
        p.write_text(yaml.safe_dump(data), encoding="utf-8")
        return p

    return _write
