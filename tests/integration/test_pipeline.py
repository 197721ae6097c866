"""End to end on synthetic data: train -> export -> parity -> accuracy -> latency -> report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from deploykit.cli import main
from deploykit.report import REPORT_FILES, Report
from deploykit.runfiles.manifest import verify_manifest


def test_run_writes_a_complete_report(tiny_recipe_dict, write_yaml, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(tiny_recipe_dict)), "-o", str(out)]) == 0
    report = Report.load(out / "report.json")
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    assert (out / "baseline.onnx").is_file()
    assert str(out / "report.html") in capsys.readouterr().err.replace("\n", "")
    base = report.candidate("baseline")
    assert base.macs > 0 and base.params > 0 and base.onnx_size_bytes > 0
    # the artifact and the torch model agree on the validation set
    assert abs(base.top1_pct["onnxruntime-cpu"] - base.top1_pct["torch-cpu"]) < 1.0
    assert set(base.metrics) == {"top1_pct", "top5_pct"}   # metrics only, in percent
    assert base.parity["max_abs_error"] < 1e-3
    got = {(lr.runtime, lr.batch) for lr in base.latency}
    assert got == {("torch", 1), ("torch", 4), ("onnxruntime", 1), ("onnxruntime", 4)}
    assert all(lr.p50_ms > 0 and lr.p99_ms >= lr.p50_ms for lr in base.latency)
    raw = json.loads((out / "report.json").read_text())
    assert raw["recipe_hash"] and raw["environment"]["threads"] == 2
    assert raw["stages"][0]["name"] == "train" and raw["stages"][0]["peak_rss_gb"] > 0.1
    assert verify_manifest(out) == []   # written last, listing every file with its hash
    assert not (out / ".deploykit.lock").exists()

    # --resume on a finished run reuses the baseline checkpoint instead of retraining; the
    # recipe's gates are applied at the end: an impossible size ceiling fails the run (exit 1)
    gated = {**tiny_recipe_dict, "gates": {"max_accuracy_drop": 0.0, "max_size_mb": 1e-6}}
    assert main(["run", str(write_yaml(gated)), "-o", str(out), "--resume"]) == 1
    cases = ET.parse(out / "gate.xml").getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == ["max_accuracy_drop", "max_size_mb"]
    assert [c.find("failure") is None for c in cases] == [True, False]
    assert Report.load(out / "report.json").recipe["gates"]["max_size_mb"] == 1e-6
    assert verify_manifest(out) == []

    # another recipe (other training settings) may not resume this folder: refused up front
    other = {**tiny_recipe_dict, "train": {**tiny_recipe_dict["train"], "lr": 0.01}}
    capsys.readouterr()
    assert main(["run", str(write_yaml(other)), "-o", str(out), "--resume"]) == 2
    assert "holds a run of recipe 'tiny' with other model, data, train" in " ".join(
        capsys.readouterr().err.split())
    # a file changed after the run no longer matches its manifest
    (out / "report.md").write_text("edited")
    assert verify_manifest(out) == ["report.md: differs from the manifest's hash"]
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    assert "report.md: differs from the manifest's hash" in capsys.readouterr().out
    # `deploykit report` re-renders the views and records their new hashes: whole again
    assert main(["report", str(out)]) == 0
    assert verify_manifest(out) == []
    assert main(["verify", str(out)]) == 0
    (out / "manifest.json").unlink()   # an unfinished run is never "whole"
    assert main(["verify", str(out)]) == 1
    assert main(["verify", str(out / "nosuch")]) == 2
