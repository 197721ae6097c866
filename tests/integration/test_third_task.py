"""A task deploykit does not have, defined here and nowhere else: multi-label classification
(each image may show any of four marks; the model answers with one sigmoid per mark, trained
with binary cross-entropy, judged on micro-F1). Registered by name, it runs prune -> quantize
-> export -> parity -> measure -> report through the one pipeline, with no change to
deploykit's code."""

from __future__ import annotations

import csv
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.cli import main
from deploykit.data import IMAGENET_MEAN, IMAGENET_STD, Loaders, TensorLoader
from deploykit.recipe.task_names import task_names
from deploykit.report import Report
from deploykit.tasks import get_task, register_task
from deploykit.tasks.classify.task import ClassifyTask
from deploykit.train import Objective

MARKS = 4


def _images(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise with a bright square in quadrant k for every mark k the image carries."""
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, MARKS, generator=gen) < 0.5).float()
    images = torch.randint(0, 60, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    half = size // 2
    for k in range(MARKS):
        y, x = divmod(k, 2)
        on = labels[:, k].bool()
        images[on, :, y * half + 2:y * half + half - 2, x * half + 2:x * half + half - 2] = 230
    return images, labels


def _f1(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    pred = logits > 0
    truth = labels > 0.5
    tp = (pred & truth).sum().item()
    fp = (pred & ~truth).sum().item()
    fn = (~pred & truth).sum().item()
    exact = (pred == truth).all(dim=1).float().mean().item()
    return {"f1_pct": 100.0 * 2 * tp / max(2 * tp + fp + fn, 1), "exact_pct": 100.0 * exact}


def _bce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"loss": F.binary_cross_entropy_with_logits(model(x), y)}


class MultiLabelTask(ClassifyTask):
    name = "multilabel-test"
    primary_metric = "f1_pct"
    stage_kinds = ("prune", "quantize")

    @property
    def objective(self) -> Objective:
        return Objective(_bce, lambda model, loader, device: self.evaluate(model, loader),
                         self.primary_metric)

    def loaders(self, recipe):
        size, bs = recipe.data.image_size, recipe.data.batch_size
        xtr, ytr = _images(256, size, recipe.seed)
        xva, yva = _images(96, size, recipe.seed + 1)

        def loader(x, y, **kw):
            return TensorLoader(x, y, bs, IMAGENET_MEAN, IMAGENET_STD, **kw)

        return Loaders(loader(xtr, ytr, shuffle=True, seed=recipe.seed), loader(xva, yva),
                       loader(xtr[:64], ytr[:64]), MARKS, (3, size, size))

    def evaluate(self, model, loader):
        model.eval()
        with torch.no_grad():
            out = [(model(x), y) for x, y in loader]
        return _f1(torch.cat([o for o, _ in out]), torch.cat([y for _, y in out]))

    def score(self, runner, loader):
        out = [(torch.from_numpy(runner(x.numpy())), y) for x, y in loader]
        return _f1(torch.cat([o for o, _ in out]), torch.cat([y for _, y in out]))


@pytest.fixture(scope="module")
def task() -> MultiLabelTask:
    if "multilabel-test" not in task_names():
        register_task(MultiLabelTask(), "four marks per image, micro-F1 (a test's task)")
    return get_task("multilabel-test")


def test_a_task_defined_in_a_test_runs_through_the_one_pipeline(task, write_yaml, tmp_path):
    recipe = {
        "name": "multilabel", "task": "multilabel-test", "seed": 0,
        "model": {"source": "builtin", "name": "resnet20", "num_classes": MARKS},
        "data": {"kind": "synthetic", "image_size": 16, "batch_size": 32},
        "train": {"epochs": 4, "lr": 0.05, "schedule": "onecycle"},
        "stages": [{"kind": "prune", "target": {"macs_ratio": 0.6},
                    "finetune": {"epochs": 1, "lr": 0.01}},
                   {"kind": "quantize", "speed_check": None}],
        "bench": {"batch_sizes": [1, 8], "iterations": 5, "warmup": 1,
                  "target_rel_ci": None},
    }
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    assert (r.task, r.primary_metric) == ("multilabel-test", "f1_pct")
    assert [c.name for c in r.candidates] == ["baseline", "prune", "ptq-int8"]
    base, pruned, int8 = r.candidates
    assert r.stages[0]["metrics"]["val_f1_pct"] > 60     # it learned the marks (BCE, F1)
    assert pruned.macs < 0.7 * base.macs
    assert int8.precision == "int8" and int8.keep_float            # stem and head float
    quantize = r.stages[-1]["metrics"]          # the stage evaluated with the task's metric
    assert quantize["float_f1_pct"] == pytest.approx(pruned.metrics["f1_pct"]["torch-cpu"])
    assert quantize["int8_torch_f1_pct"] == pytest.approx(int8.metrics["f1_pct"]["torch-cpu"])
    for c in r.candidates:
        assert set(c.metrics) == {"f1_pct", "exact_pct"}
        assert set(c.metrics["f1_pct"]) == {"torch-cpu", "onnxruntime-cpu"}
        timed = ("onnxruntime-cpu",) if c.precision == "int8" else ("torch-cpu",
                                                                     "onnxruntime-cpu")
        assert {(lr.key, lr.batch) for lr in c.latency} == {(rt, b) for rt in timed
                                                             for b in (1, 8)}
        assert c.parity["max_abs_error"] is not None
    for c in (base, pruned):   # float artifacts score as their PyTorch models do
        assert c.metrics["f1_pct"]["onnxruntime-cpu"] == pytest.approx(
            c.metrics["f1_pct"]["torch-cpu"], abs=0.5)
    assert pruned.delta_pts["f1_pct"] == pytest.approx(
        pruned.artifact("f1_pct") - base.artifact("f1_pct"))
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert {"f1_artifact_pct", "delta_f1_pts", "exact_artifact_pct"} <= set(rows[0])
    assert "f1_pct ORT CPU (%)" in (out / "report.md").read_text()


def test_a_registered_task_refuses_stages_it_does_not_support(task, write_yaml, tmp_path,
                                                               capsys):
    recipe = {"task": "multilabel-test", "data": {"kind": "synthetic", "image_size": 16},
              "model": {"num_classes": MARKS}, "stages": [{"kind": "lowrank"}]}
    assert main(["run", str(write_yaml(recipe)), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "lowrank does not run on task 'multilabel-test'" in err and "prune, quantize" in err
    assert not (tmp_path / "r" / "baseline.pt").exists()


def test_an_unknown_task_names_the_registered_ones(write_yaml, capsys):
    assert main(["inspect", str(write_yaml({"task": "segmentation-x"}))]) == 2
    assert "unknown task 'segmentation-x'; available: classification, detection" in \
        capsys.readouterr().err
