"""OpenVINO as a runtime: a classification and a detection recipe measured on openvino-cpu
beside ONNX Runtime (scores, parity, latency rows), refused at load where OpenVINO is missing,
and an INT8 artifact that OpenVINO runs as integer kernels."""

from __future__ import annotations

import sys

import pytest
import torch

from deploykit.cli import main
from deploykit.report import Report

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")

BENCH = {"runtimes": ["onnxruntime-cpu", "openvino-cpu"], "batch_sizes": [1, 4],
         "iterations": 5, "warmup": 1, "target_rel_ci": None}


def test_a_classification_recipe_is_measured_on_openvino(tiny_recipe_dict, write_yaml, tmp_path):
    recipe = {**tiny_recipe_dict, "bench": BENCH,
              "stages": [{"kind": "prune", "target": {"ratio": 0.5}, "round_to": 8,
                          "finetune": None},
                         {"kind": "quantize", "target": "openvino",
                          "speed_check": {"batch_sizes": [4], "iterations": 5}}]}
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    # target openvino: the INT8 placement was timed against its float twin in OpenVINO
    check = r.stages[-1]["metrics"]["speed_check"]
    assert check["runtime"] == "openvino-cpu" and "openvino-cpu" in check["note"]
    assert set(check["float_ms"]) == {"4"} or set(check["float_ms"]) == {4}
    for c in r.candidates:
        # the same artifact scored in both runtimes: the float ones agree exactly, the INT8
        # one within a sample or two (the runtimes round integer products differently)
        ort, ov = c.top1_pct["onnxruntime-cpu"], c.top1_pct["openvino-cpu"]
        assert abs(ort - ov) <= (0.0 if c.precision == "fp32" else 100 * 2 / 32), c.name
        key = next(k for k in c.parity if k.startswith("openvino-cpu (") and
                   k.endswith("_max_abs_error"))
        limit = 1e-3 if c.precision == "fp32" else 0.2
        assert c.parity[key] < limit, (c.name, c.parity[key])
        rows = {(lr.key, lr.batch) for lr in c.latency}
        assert {("openvino-cpu", 1), ("openvino-cpu", 4)} <= rows
        ov_row = c.latency_at("openvino-cpu", 1)
        assert ov_row.runtime == "openvino" and ov_row.p50_ms > 0
        assert "latency hint, 2 threads" in ov_row.setup
        # every CPU row: its MAC rate, and against the peak for its precision
        for lr in c.latency:
            assert lr.gmacs_per_s == pytest.approx(c.macs * lr.batch / lr.p50_ms / 1e6)
            assert lr.peak_basis is None or f"{c.precision} MAC/cycle" in lr.peak_basis
    md = (out / "report.md").read_text()
    assert "OpenVINO CPU" in md and "GMAC/s" in md and "of CPU peak" in md


@pytest.mark.slow
def test_a_detection_recipe_is_measured_on_openvino(write_yaml, tmp_path):
    recipe = {
        "name": "tiny-detect-ov", "task": "detection",
        "model": {"source": "torchvision", "name": "ssdlite320_mobilenet_v3_large",
                  "num_classes": 5, "width_mult": 0.25},
        "data": {"kind": "shapes", "image_size": 64, "batch_size": 8, "eval_batch_size": 16,
                 "limit_train": 32, "limit_val": 16, "calib_samples": 8},
        "train": {"epochs": 1, "optimizer": "adamw", "lr": 3e-3, "schedule": "cosine"},
        "stages": [{"kind": "quantize"}],
        "bench": {**BENCH, "batch_sizes": [1]},
    }
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    assert [c.name for c in r.candidates] == ["baseline", "ptq-int8"]
    for c in r.candidates:
        assert set(c.map50_pct) >= {"onnxruntime-cpu", "openvino-cpu"}
        assert c.latency_at("openvino-cpu", 1) is not None
        # the network alone is timed on OpenVINO too
        assert any(lr.key == "openvino-cpu" for lr in c.network_latency)
        assert any(k.startswith("openvino-cpu (") for k in c.parity), c.parity
    base = r.candidates[0]
    assert base.map50_pct["openvino-cpu"] == pytest.approx(base.map50_pct["onnxruntime-cpu"],
                                                           abs=1.0)


def test_a_recipe_naming_openvino_without_it_exits_2_before_writing(
        tiny_recipe_dict, write_yaml, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)   # import openvino fails
    out = tmp_path / "run"
    path = write_yaml({**tiny_recipe_dict, "bench": BENCH})
    assert main(["run", str(path), "-o", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "bench.runtimes[1]" in err and 'pip install "deploykit[openvino]"' in err
    assert not out.exists()
    assert main(["inspect", str(path)]) == 2


def test_target_openvino_without_it_exits_2_naming_the_stage(tiny_recipe_dict, write_yaml,
                                                               monkeypatch, capsys):
    """The speed check of target: openvino needs OpenVINO even when bench does not time it."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    recipe = {**tiny_recipe_dict, "stages": [{"kind": "quantize", "target": "openvino"}]}
    assert main(["inspect", str(write_yaml(recipe))]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "stages[0].target: openvino times INT8 against its float twin on openvino-cpu" in err
    assert "speed_check: null" in err


def test_openvino_gpu_is_refused_where_openvino_sees_none(tiny_recipe_dict, write_yaml, capsys):
    from deploykit.runtimes import openvino_devices

    if any(d.startswith("GPU") for d in openvino_devices()):
        pytest.skip("this machine has an Intel GPU")
    bench = {**BENCH, "runtimes": ["openvino-gpu"]}
    assert main(["inspect", str(write_yaml({**tiny_recipe_dict, "bench": bench}))]) == 2
    assert "needs an OpenVINO GPU device" in " ".join(capsys.readouterr().err.split())


def test_openvino_runs_an_int8_artifact_as_integer_kernels_and_a_float_one_in_fp32(tmp_path):
    from deploykit.export import export_onnx
    from deploykit.models import build_model
    from deploykit.quant import build_quantized
    from deploykit.recipe import ModelSpec, QuantizeSpec
    from deploykit.runtimes import make_runner

    torch.manual_seed(0)
    model = build_model(ModelSpec(name="resnet20", num_classes=4)).eval()
    float_path = tmp_path / "float.onnx"
    export_onnx(model, (3, 16, 16), float_path, 18, True)
    batches = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    qmodel = build_quantized(model, QuantizeSpec(target="openvino"), ["conv1", "fc"], batches)
    int8_path = tmp_path / "int8.onnx"
    export_onnx(qmodel, (3, 16, 16), int8_path, 18, True)
    fp = make_runner("openvino-cpu", onnx_path=float_path).execution_precisions()
    q = make_runner("openvino-cpu", onnx_path=int8_path, precision="int8").execution_precisions()
    assert len(fp) >= 20 and set(fp.values()) == {"f32"}
    integer = [name for name, p in q.items() if p in ("u8", "i8")]
    assert len(integer) >= 18, q    # the 19 convs between the float stem and classifier
    assert len(q) - len(integer) <= 2
