"""The distill stage: in a recipe after prune, and resumed after an interrupted epoch."""

from __future__ import annotations

import contextlib
import copy

import torch

from deploykit.cli import main
from deploykit.data import build_loaders
from deploykit.distill import DistillObjective
from deploykit.models import build_model, find_first_last
from deploykit.recipe import DataSpec, DistillSpec, ModelSpec
from deploykit.report import Report
from deploykit.stages import distill as distill_stage
from deploykit.state import PipelineState
from deploykit.train import seed_everything


def test_prune_then_distill_recovers_and_is_reported(tiny_recipe_dict, write_yaml, tmp_path):
    recipe = {**tiny_recipe_dict, "train": {"epochs": 3, "lr": 0.05, "schedule": "cosine"},
              "stages": [
                  {"kind": "prune", "target": {"macs_ratio": 0.3}, "round_to": None},
                  {"kind": "distill", "losses": {"ce": 0.5, "kd": 0.5, "overhaul": 1e-3},
                   "teacher": {"bn_train": True},
                   "train": {"epochs": 2, "lr": 0.02, "schedule": "cosine"}}]}
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    assert [c.name for c in r.candidates] == ["baseline", "prune", "prune+distill"]
    stage = r.stages[-1]
    assert stage["name"] == "distill"
    m = stage["metrics"]
    assert m["terms"] == ["ce", "kd", "overhaul"] and m["adapter_params"] > 0
    assert m["val_top1_pct"] > m["student_top1_before_pct"]   # pruning without fine-tune hurt
    distilled = r.candidates[-1]
    assert distilled.macs == r.candidates[1].macs            # adapters are not exported
    assert distilled.parity["max_abs_error"] <= 1e-3
    assert (out / "checkpoints" / "distill0" / "best.pt").is_file()


def _state(tmp_path, resume=False):
    seed_everything(0)
    loaders = build_loaders(DataSpec(kind="synthetic", image_size=16, batch_size=32,
                                     synthetic_samples=192), num_classes=4)
    model = build_model(ModelSpec(name="resnet20", num_classes=4))
    student = copy.deepcopy(model)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(0.5)
    state = PipelineState.start(model, find_first_last(model, (3, 16, 16)), (3, 16, 16),
                                tmp_path, resume)
    state.model = student
    return state, loaders


def test_resume_after_an_interrupted_epoch_continues(tmp_path, monkeypatch):
    spec = DistillSpec(losses={"ce": 0.5, "kd": 0.5, "hint": 1e-3},
                       train={"epochs": 2, "lr": 0.02, "schedule": "cosine"})
    state, loaders = _state(tmp_path / "full")
    full = distill_stage.run(state, loaders, spec).candidates[-1].model

    calls = {"n": 0}
    original = DistillObjective.loss

    class Stop(Exception):
        pass

    def counting(self, student, x, y):
        calls["n"] += 1
        if calls["n"] == len(loaders.train) + 2:   # inside the second epoch
            raise Stop
        return original(self, student, x, y)

    monkeypatch.setattr(DistillObjective, "loss", counting)
    state, loaders = _state(tmp_path / "cut")
    with contextlib.suppress(Stop):
        distill_stage.run(state, loaders, spec)
    calls["n"] = -10**9   # no more interruptions
    state, loaders = _state(tmp_path / "cut", resume=True)
    state = distill_stage.run(state, loaders, spec)
    metrics = state.history[-1].metrics
    assert metrics["epochs"] == 1                      # only the interrupted epoch ran again
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    resumed = state.candidates[-1].model
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k
