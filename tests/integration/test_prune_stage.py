"""The prune stage inside the pipeline: latency target, fine-tune, report, resume."""

from __future__ import annotations

import pytest

from deploykit.bench import LatencyProbe
from deploykit.cli import main
from deploykit.models import build_model, count_macs_params
from deploykit.recipe import ModelSpec
from deploykit.report import Report

pytestmark = pytest.mark.slow


def test_latency_ratio_target_stops_when_measured_ratio_is_reached(tiny_recipe_dict, write_yaml,
                                                                   tmp_path, monkeypatch):
    # Real timings of a tiny model are too noisy to assert on (measured speed-ups live in
    # benchmarks/); here latency is a deterministic function of MACs so the search is tested.
    base_macs = count_macs_params(build_model(ModelSpec(num_classes=4)), (3, 32, 32))[0]
    monkeypatch.setattr(LatencyProbe, "ratio",
                        lambda self, cand: (count_macs_params(cand, (3, 32, 32))[0]
                                            / base_macs) ** 0.7)
    recipe = {**tiny_recipe_dict,
              "data": {**tiny_recipe_dict["data"], "image_size": 32},
              "train": {"epochs": 1, "lr": 0.01, "schedule": "constant"},
              "stages": [{"kind": "prune", "target": {"latency_ratio": 0.8, "batch_size": 16},
                          "finetune": {"epochs": 1, "lr": 0.01, "schedule": "constant"}}]}
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    report = Report.load(out / "report.json")
    stage = next(s for s in report.stages if s["name"] == "prune")
    probes = stage["metrics"]["latency_probes"]
    assert probes and any(p["latency_ratio"] <= 0.8 for p in probes)
    # the chosen model is the least-pruned probe that met the target, re-measured at the end
    assert stage["metrics"]["latency_ratio_measured"] <= 0.8
    met = [p["macs_ratio"] for p in probes if p["latency_ratio"] <= 0.8]
    assert stage["metrics"]["macs_ratio"] == pytest.approx(max(met), abs=0.03)
    pruned = report.candidate("prune")
    assert pruned.macs < report.candidate("baseline").macs
    assert pruned.arch["widths"]["fc"] == 4  # classifier keeps its output size
    # --resume reloads the finished prune stage from prune.pt (replayed history)
    assert main(["run", str(write_yaml(recipe)), "-o", str(out), "--resume"]) == 0
    again = Report.load(out / "report.json").candidate("prune")
    assert again.macs == pruned.macs


def test_resume_continues_after_the_last_finished_prune_round(tiny_recipe_dict, write_yaml,
                                                              tmp_path, monkeypatch):
    # A run killed in round 2 of 2 leaves round 1's checkpoint (and no prune.pt): the resumed
    # run prunes round 2 only, and ends with the same model as an uninterrupted run.
    import deploykit.stages.prune as prune_stage

    recipe = {**tiny_recipe_dict,
              "stages": [{"kind": "prune", "steps": 2, "target": {"macs_ratio": 0.5},
                          "finetune": {"epochs": 1, "lr": 0.01, "schedule": "constant"}}]}
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    clean = Report.load(out / "report.json").candidate("prune")
    rounds = out / "checkpoints" / "prune-rounds"
    assert sorted(p.name for p in rounds.iterdir()) == ["round1.pt", "round2.pt"]
    (out / "prune.pt").unlink()
    (rounds / "round2.pt").unlink()
    (out / "manifest.json").unlink()
    goals = []
    real = prune_stage.prune_to_macs

    def counting(model, shape, spec, ignored, goal, *args):
        goals.append(goal)
        return real(model, shape, spec, ignored, goal, *args)

    monkeypatch.setattr(prune_stage, "prune_to_macs", counting)
    assert main(["run", str(write_yaml(recipe)), "-o", str(out), "--resume"]) == 0
    base = Report.load(out / "report.json").candidate("baseline").macs
    assert goals == [int(base * 0.5)]       # round 2's goal only: round 1 was not redone
    again = Report.load(out / "report.json").candidate("prune")
    assert again.macs == clean.macs and again.arch["widths"] == clean.arch["widths"]
