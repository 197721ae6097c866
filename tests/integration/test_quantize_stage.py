"""The quantize stage in the pipeline: QAT through the shared loop, FP16, QDQ parity, report."""

from __future__ import annotations

import pytest

import deploykit.stages.quantize as quantize_stage
from deploykit.cli import main
from deploykit.report import Report


def test_qat_and_fp16_candidates_are_exported_checked_and_reported(tiny_recipe_dict,
                                                                    write_yaml, tmp_path):
    recipe = {**tiny_recipe_dict, "stages": [{
        "kind": "quantize", "mode": "qat", "target": "onnxruntime-cpu", "fp16": True,
        "calibration": {"method": "percentile"}, "speed_check": None,
        "qat": {"epochs": 2, "lr": 1e-3, "freeze_bn_after": 1, "freeze_observers_after": 1}}]}
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    assert [c.name for c in r.candidates] == ["baseline", "fp16", "qat-int8"]
    base, fp16, q = r.candidates
    assert (fp16.precision, q.precision) == ("fp16", "int8")
    # parity of the QDQ ONNX against the PyTorch fake-quant model was enforced before timing
    assert q.parity["max_error_vs_range"] <= 0.1 and q.parity["top1_agreement"] >= 0.95
    assert fp16.parity["max_abs_error"] <= 5e-2
    assert q.keep_float == ["conv1", "fc"]
    precision = q.arch["layer_precision"]
    assert precision["conv1"] == precision["fc"] == "fp32"
    assert sum(v == "int8" for v in precision.values()) == len(precision) - 2
    assert abs(q.macs - base.macs) < 0.02 * base.macs  # BatchNorm folded away
    assert q.onnx_size_bytes < 0.6 * base.onnx_size_bytes
    assert {(lr.key, lr.precision) for lr in q.latency} == {("onnxruntime-cpu", "int8")}
    assert q.not_timed["torch-cpu"].startswith("not applicable")   # no simulated latency
    assert {lr.key for lr in fp16.latency} == {"torch-cpu", "onnxruntime-cpu"}
    stage = r.stages[-1]
    assert stage["name"] == "quantize" and len(stage["metrics"]["qat_history"]) == 2
    assert "Layer precision: qat-int8" in (out / "report.md").read_text()


def test_ptq_times_int8_against_its_float_twin_and_reports_the_verdict(tiny_recipe_dict,
                                                                      write_yaml, tmp_path):
    from deploykit.report import int8_recommendation

    recipe = {**tiny_recipe_dict, "stages": [{
        "kind": "quantize", "speed_check": {"batch_sizes": [1, 8], "iterations": 10}}]}
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    metrics = r.stages[-1]["metrics"]
    check = metrics["speed_check"]
    assert isinstance(metrics["int8_pays"], bool) and metrics["int8_pays"] == check["int8_pays"]
    assert check["trials"][0]["name"] == "configured" and set(check["float_ms"]) == {"1", "8"}
    chosen = next(t for t in check["trials"] if t["name"] == check["chosen"])
    assert r.candidates[-1].keep_float == chosen["keep_float"]
    assert ("does not pay" in check["note"]) != check["int8_pays"]
    assert r.recommendation == int8_recommendation(r)   # judged on the final measurement
    # the placement rests on timings: a resumed run reuses the interrupted run's choice
    # instead of timing again (which could choose otherwise on a busier machine)
    (out / "manifest.json").unlink()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quantize_stage, "check_speed",
                   lambda *a, **k: pytest.fail("timed again on resume"))
        assert main(["run", str(write_yaml(recipe)), "-o", str(out), "--resume"]) == 0
    again = Report.load(out / "report.json")
    assert again.candidates[-1].keep_float == r.candidates[-1].keep_float
    assert again.stages[-1]["metrics"]["speed_check"]["chosen"] == check["chosen"]


def test_keep_sensitive_keeps_the_top_of_the_sensitivity_ranking_float(tiny_recipe_dict,
                                                                       write_yaml, tmp_path):
    recipe = {**tiny_recipe_dict,
              "stages": [{"kind": "quantize", "keep_float": [], "keep_sensitive": 2,
                          "sensitivity": {"metric": "sqnr", "samples": 32},
                          "speed_check": None}]}
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    ranking = [s["layer"] for s in r.stages[-1]["metrics"]["sensitivity"]]
    q = r.candidates[-1]
    assert q.keep_float == ranking[:2]
    assert {n for n, p in q.arch["layer_precision"].items() if p == "fp32"} == set(ranking[:2])
