"""The lowrank stage in a recipe: factorise, distil back, export with parity, reload."""

from __future__ import annotations

import torch

from deploykit.cli import main
from deploykit.models import build_model, find_first_last
from deploykit.recipe import ModelSpec
from deploykit.report import Report
from deploykit.tasks.restore import restore_checkpoint


def test_lowrank_then_distill_in_a_recipe(tiny_recipe_dict, write_yaml, tmp_path):
    recipe = {**tiny_recipe_dict, "train": {"epochs": 2, "lr": 0.05, "schedule": "cosine"},
              "bench": {**tiny_recipe_dict["bench"], "batch_sizes": [2]},
              "stages": [
                  {"kind": "lowrank", "method": "tucker2", "target": {"macs_ratio": 0.5},
                   "layers": ["layer2.*", "layer3.*"]},
                  {"kind": "distill", "losses": {"ce": 0.5, "kd": 0.5},
                   "train": {"epochs": 1, "lr": 0.01, "schedule": "cosine"}}]}
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    assert [c.name for c in r.candidates] == ["baseline", "lowrank", "lowrank+distill"]
    base, lr, dist = r.candidates
    assert lr.macs <= 0.52 * base.macs and dist.macs == lr.macs
    assert lr.parity["max_abs_error"] <= 1e-3 and dist.parity["max_abs_error"] <= 1e-3
    m = r.stages[1]["metrics"]
    factorised = [p for p in m["layers"] if p["status"] == "factorised"]
    assert factorised and all(p["name"].startswith(("layer2", "layer3")) for p in factorised)
    assert all(len(p["ranks"]) == 2 and 0 <= p["rel_error"] < 1 for p in factorised)
    assert sum(p["macs_before"] - p["macs_after"] for p in factorised) == \
        m["macs_before"] - m["macs_after"]
    # the stage's checkpoint reloads into a freshly built model (structure rebuilt)
    spec = ModelSpec(name="resnet20", num_classes=4)
    fresh = build_model(spec)
    restore_checkpoint(fresh, out / "lowrank.pt", 4, find_first_last(fresh, (3, 16, 16)),
                       (3, 16, 16))
    assert isinstance(fresh.get_submodule(factorised[0]["name"]), torch.nn.Sequential)
