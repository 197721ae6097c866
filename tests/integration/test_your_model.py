"""recipes/your-model-and-data.yaml as a user would run it: their image folder, their weights
file (here a torchvision ResNet-18 state dict for 1000 classes, written by the test) ->
fine-tuned baseline, prune, distill, INT8, export, report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from deploykit.cli import main
from deploykit.models import build_model, load_pretrained
from deploykit.recipe import ModelSpec
from deploykit.report import Report

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("red", "green", "blue")


def _image_folder(root: Path, per_class: dict[str, int]) -> None:
    """Noise images tinted by their class."""
    gen = torch.Generator().manual_seed(0)
    for split, n in per_class.items():
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                px = (torch.rand(24, 24, 3, generator=gen) * 80).to(torch.uint8)
                px[..., c] += 150
                Image.fromarray(px.numpy()).save(folder / f"{i}.png")


def test_pretrained_weights_for_another_class_count_start_the_classifier_fresh(tmp_path):
    source = build_model(ModelSpec(source="torchvision", name="resnet18", num_classes=1000))
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "w.pt")
    mine = build_model(ModelSpec(source="torchvision", name="resnet18", num_classes=3))
    fresh_fc = mine.fc.weight.clone()
    assert load_pretrained(mine, tmp_path / "w.pt", 3, "fc") == ["fc.weight", "fc.bias"]
    assert torch.equal(mine.conv1.weight, source.conv1.weight)     # the body is the file's
    assert torch.equal(mine.fc.weight, fresh_fc)                   # the classifier is fresh


@pytest.mark.slow
def test_your_model_and_data_recipe_runs_on_your_folder_and_weights(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.chdir(tmp_path)   # the recipe's relative paths: my-images/, my-weights.pt
    _image_folder(tmp_path / "my-images", {"train": 16, "val": 8})
    weights = build_model(ModelSpec(source="torchvision", name="resnet18", num_classes=1000))
    torch.save(weights.state_dict(), tmp_path / "my-weights.pt")
    recipe = yaml.safe_load((ROOT / "recipes" / "your-model-and-data.yaml").read_text())
    # the same recipe, made small for CI: 32 px, one epoch per training, short timing
    recipe["data"].update(image_size=32, batch_size=16)
    recipe["train"]["epochs"] = 1
    recipe["stages"][1]["train"]["epochs"] = 1
    recipe["bench"] = {"runtimes": ["onnxruntime-cpu"], "batch_sizes": [1], "iterations": 5,
                       "warmup": 1, "target_rel_ci": None}
    recipe["gates"] = {"max_accuracy_drop": 100.0}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "-o", "run"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "model.weights: loaded my-weights.pt" in err and "fc.weight, fc.bias start fresh" in err
    r = Report.load(tmp_path / "run" / "report.json")
    assert "num_classes" not in recipe["model"]                    # the folder gave the count
    assert r.recipe["model"]["num_classes"] == len(CLASSES)
    assert [c.name for c in r.candidates] == ["baseline", "prune", "prune+distill",
                                              "ptq-int8"]
    base, pruned, _, int8 = r.candidates
    assert pruned.macs < 0.6 * base.macs and int8.precision == "int8"
    assert r.stages[0]["name"] == "train"                 # the baseline was fine-tuned
    assert all((tmp_path / "run" / c.onnx_file).is_file() for c in r.candidates)
    assert (tmp_path / "run" / "report.html").is_file()
