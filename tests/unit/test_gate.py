"""The CI gate: pass, fail and missing-metric cases per threshold; noise; JUnit; exit codes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from report_factory import make_report

from deploykit.cli import main
from deploykit.errors import DeployKitError
from deploykit.gate import evaluate_gates, junit_xml
from deploykit.recipe import GateSpec


def _gate(report, baseline=None, **kw):
    return evaluate_gates(report, GateSpec.model_validate(kw), baseline)


# --- accuracy -------------------------------------------------------------------------------
def test_accuracy_drop_pass_and_fail():
    r = make_report(cand_top1=90.2, base_top1=91.0)  # 0.8 points lost
    assert _gate(r, max_accuracy_drop=1.0).passed
    res = _gate(r, max_accuracy_drop=0.5)
    assert not res.passed and res.exit_code == 1
    assert res.checks[0].measured == pytest.approx(0.8)


def test_accuracy_missing_fails_closed():
    r = make_report()
    r.candidates[1].top1_pct = {}
    res = _gate(r, max_accuracy_drop=5.0)
    assert not res.passed and res.checks[0].measured is None
    assert "missing metric" in res.checks[0].message and "prune" in res.checks[0].message


# --- speed-up -------------------------------------------------------------------------------
def test_min_speedup_pass_fail_per_batch():
    r = make_report(base_ms={1: 2.0, 64: 40.0}, cand_ms={1: 1.9, 64: 20.0})
    res = _gate(r, min_speedup={"value": 1.5})  # every batch measured
    verdicts = {c.name: c.passed for c in res.checks}
    assert verdicts == {"min_speedup[onnxruntime-cpu b1]": False,
                        "min_speedup[onnxruntime-cpu b64]": True}
    assert _gate(r, min_speedup={"value": 1.5, "batch": 64}).passed
    assert _gate(r, min_speedup=1.5).exit_code == 1  # bare number = value, all batches


def test_min_speedup_missing_runtime_or_batch_fails_closed():
    r = make_report()
    for kw in ({"value": 1.1, "runtime": "tensorrt"}, {"value": 1.1, "batch": 16}):
        res = _gate(r, min_speedup=kw)
        assert not res.passed and "missing metric" in res.checks[0].message


def _with_int8_step(int8_ms: dict[int, float]):
    """baseline (2.0 / 40 ms) -> prune (1.0 / 20 ms) -> ptq-int8 (``int8_ms``)."""
    import dataclasses

    from report_factory import latency

    r = make_report()
    prune = r.candidates[1]
    lat = [latency(ms, b, seed=200 + b, speedup=r.candidates[0].latency_at(
        "onnxruntime-cpu", b).p50_ms / ms) for b, ms in int8_ms.items()]
    r.candidates.append(dataclasses.replace(prune, name="ptq-int8", precision="int8",
                                            latency=lat))
    return r


def test_min_speedup_over_previous_fails_an_int8_step_that_slows_the_model():
    r = _with_int8_step({1: 1.25, 64: 16.0})    # slower than prune at b1, faster at b64
    assert _gate(r, min_speedup=1.5).passed     # against the baseline it looks fine
    res = _gate(r, min_speedup_over_previous=1.0)
    verdicts = {c.name: c.passed for c in res.checks}
    assert verdicts == {"min_speedup_over_previous[onnxruntime-cpu b1]": False,
                        "min_speedup_over_previous[onnxruntime-cpu b64]": True}
    assert res.checks[0].measured == pytest.approx(1.0 / 1.25, rel=0.05)
    assert "vs prune" in res.checks[0].message
    assert _gate(_with_int8_step({1: 0.8, 64: 16.0}), min_speedup_over_previous=1.0).passed


def test_min_speedup_over_previous_fails_closed_on_the_baseline_or_missing_batches():
    r = _with_int8_step({1: 0.8})
    res = _gate(r, min_speedup_over_previous={"value": 1.0, "batch": 64})
    assert not res.passed and "missing metric" in res.checks[0].message
    res = _gate(r, candidate="baseline", min_speedup_over_previous=1.0)
    assert not res.passed and "it is the baseline" in res.checks[0].message


def test_cli_gate_min_speedup_over_previous(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(_with_int8_step({1: 1.25, 64: 16.0}).to_json())
    assert main(["gate", str(path), "--min-speedup-over-previous", "1.0"]) == 1
    assert main(["gate", str(path), "--min-speedup-over-previous", "1.0", "--batch", "64"]) == 0


# --- latency ceiling ------------------------------------------------------------------------
def test_max_latency_pass_fail_and_percentile():
    r = make_report(cand_ms={1: 1.0, 64: 20.0})
    assert _gate(r, max_latency_ms={"value": 1.5, "batch": 1}).passed
    assert not _gate(r, max_latency_ms={"value": 0.5, "batch": 1}).passed
    p99 = r.candidates[1].latency_at("onnxruntime-cpu", 1).p99_ms
    res = _gate(r, max_latency_ms={"value": (p99 + 1.0) / 2, "batch": 1, "percentile": "p99"})
    assert not res.passed and "p99" in res.checks[0].name


def test_max_latency_missing_fails_closed():
    res = _gate(make_report(), max_latency_ms={"value": 100, "batch": 8})
    assert not res.passed and res.checks[0].measured is None


# --- size -----------------------------------------------------------------------------------
def test_max_size_pass_fail_missing():
    r = make_report(size_bytes=600_000)
    assert _gate(r, max_size_mb=1.0).passed
    assert not _gate(r, max_size_mb=0.5).passed
    res = _gate(make_report(size_bytes=None), max_size_mb=1.0)
    assert not res.passed and "ONNX file size" in res.checks[0].message


# --- regression vs an earlier report, judged against noise ----------------------------------
def test_regression_within_noise_passes_large_one_fails():
    old = make_report(cand_ms={1: 1.00, 64: 20.0}, seed=1)
    slightly = make_report(cand_ms={1: 1.01, 64: 20.2}, seed=2)  # 1% slower: jitter
    much = make_report(cand_ms={1: 1.30, 64: 26.0}, seed=3)  # 30% slower
    ok = _gate(slightly, old, max_latency_regression=0.0)
    assert ok.passed, [c.message for c in ok.checks]
    bad = _gate(much, old, max_latency_regression=5.0)
    assert not bad.passed and all(not c.passed for c in bad.checks)
    assert bad.checks[0].measured == pytest.approx(30.0, abs=3.0)


def test_regression_needs_a_baseline_and_matching_metrics():
    with pytest.raises(DeployKitError, match="--baseline"):
        _gate(make_report(), None, max_latency_regression=5.0)
    renamed = make_report(name="quantize")
    res = _gate(renamed, make_report(), max_latency_regression=5.0)
    assert not res.passed and "missing metric" in res.checks[0].message
    res = _gate(make_report(cand_ms={16: 5.0}, base_ms={16: 9.0}), make_report(),
                max_latency_regression=5.0)
    assert not res.passed and res.checks[0].measured is None


# --- bad input ------------------------------------------------------------------------------
def test_no_thresholds_or_unknown_candidate_is_bad_input():
    with pytest.raises(DeployKitError, match="no thresholds"):
        _gate(make_report())
    with pytest.raises(DeployKitError, match="nope"):
        _gate(make_report(), candidate="nope", max_size_mb=1.0)


def test_candidate_defaults_to_last_and_can_be_named():
    r = make_report(cand_top1=80.0)
    assert not _gate(r, max_accuracy_drop=1.0).passed
    assert _gate(r, candidate="baseline", max_accuracy_drop=0.0).passed


# --- JUnit ----------------------------------------------------------------------------------
def test_junit_parses_with_one_testcase_per_check():
    r = make_report(cand_top1=90.5, base_ms={1: 2.0, 64: 40.0}, cand_ms={1: 1.9, 64: 20.0})
    res = _gate(r, max_accuracy_drop=1.0, min_speedup=1.5, max_size_mb=0.1)
    root = ET.fromstring(junit_xml(res))
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == [c.name for c in res.checks]
    assert len(cases) == 4
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failed == {"min_speedup[onnxruntime-cpu b1]", "max_size_mb"}
    assert root.find("testsuite").get("failures") == "2"


# --- CLI exit codes -------------------------------------------------------------------------
@pytest.fixture
def report_file(tmp_path):
    p = tmp_path / "report.json"
    p.write_text(make_report(cand_top1=90.2).to_json())
    return p


def test_cli_gate_exit_codes(report_file, tmp_path, capsys):
    assert main(["gate", str(report_file), "--max-accuracy-drop", "1.0"]) == 0
    junit = tmp_path / "gate.xml"
    assert main(["gate", str(report_file), "--max-accuracy-drop", "0.1", "--junit",
                 str(junit)]) == 1
    assert ET.parse(junit).getroot().find(".//failure") is not None
    assert main(["gate", str(report_file)]) == 2  # no thresholds
    assert main(["gate", str(tmp_path / "missing.json"), "--max-size-mb", "1"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["gate", str(bad), "--max-size-mb", "1"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_cli_gate_reads_recipe_gates_and_flags_override(tmp_path):
    r = make_report(cand_top1=90.2)
    r.recipe = {"gates": {"max_accuracy_drop": 0.1}}
    p = tmp_path / "report.json"
    p.write_text(r.to_json())
    assert main(["gate", str(p)]) == 1
    assert main(["gate", str(p), "--max-accuracy-drop", "2"]) == 0


def test_cli_gate_regression_with_baseline(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(make_report(seed=1).to_json())
    new.write_text(make_report(cand_ms={1: 1.3, 64: 26.0}, seed=2).to_json())
    args = ["gate", str(new), "--baseline", str(old), "--max-latency-regression", "5"]
    assert main(args) == 1
    assert main([*args, "--batch", "64", "--max-latency-regression", "50"]) == 0
    assert main(["gate", str(new), "--max-latency-regression", "5"]) == 2  # no baseline
