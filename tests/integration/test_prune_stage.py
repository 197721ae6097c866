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
