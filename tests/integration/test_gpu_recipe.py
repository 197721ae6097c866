"""A recipe naming GPU runtimes, end to end without a GPU: refused at load with exit 2 and
nothing written when the runtime is missing; on a fake GPU every torch-cuda latency row names
its set-up and an INT8 candidate is reported "not applicable" there, never timed."""

from __future__ import annotations

import contextlib
import sys
import time

import pytest
from fake_gpu import FakeCudaApi, fake_onnxruntime_gpu, fake_tensorrt

from deploykit.cli import main
from deploykit.recipe import load_recipe
from deploykit.report import Report
from deploykit.runtimes import use_cuda_api
from deploykit.tune.study import point_from_report


@pytest.mark.parametrize("runtime", ["torch-cuda", "onnxruntime-tensorrt", "tensorrt"])
def test_a_runtime_this_machine_lacks_fails_at_load_and_writes_nothing(
        tiny_recipe_dict, write_yaml, tmp_path, capsys, runtime):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is checked where there is none")
    tiny_recipe_dict["bench"]["runtimes"] = ["onnxruntime-cpu", runtime]
    path = write_yaml(tiny_recipe_dict)
    out = tmp_path / "run"
    t0 = time.perf_counter()
    assert main(["run", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: bench.runtimes[1]" in err and "Traceback" not in err
    assert "remove it from bench.runtimes" in err or "drop this runtime" in err
    assert not out.exists()                      # no checkpoint, no run folder
    assert time.perf_counter() - t0 < 20         # refused before any training


def test_tune_refuses_a_missing_runtime_before_the_baseline(tiny_recipe_dict, write_yaml,
                                                            tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    tiny_recipe_dict["bench"]["runtimes"] = ["onnxruntime-cpu", "torch-cuda"]
    tiny_recipe_dict["stages"] = [{"kind": "prune", "target": {"macs_ratio": 0.7},
                                   "finetune": None}]
    tiny_recipe_dict["tune"] = {"space": {"prune.target.macs_ratio": {"low": 0.5, "high": 0.9}},
                                "latency": {"runtime": "onnxruntime-cpu", "batch": 1}}
    out = tmp_path / "tune"
    assert main(["tune", str(write_yaml(tiny_recipe_dict)), "--trials", "1", "-o",
                 str(out)]) == 2
    assert "bench.runtimes[1]" in capsys.readouterr().err
    assert not any(out.rglob("*.pt")) if out.exists() else True


@pytest.mark.parametrize("gpu", ["fake", pytest.param("real", marks=pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="no CUDA GPU on this machine"))])
def test_on_a_gpu_rows_name_their_setup_and_int8_is_not_applicable(
        tiny_recipe_dict, write_yaml, tmp_path, gpu):
    """On the fake GPU in CI; on the real one where there is one (benchmarks/gpu runs it)."""
    recipe = dict(tiny_recipe_dict)
    recipe["bench"] = {**recipe["bench"], "runtimes": ["onnxruntime-cpu", "torch-cuda"],
                       "gpu": {"precisions": ["fp32", "fp16"], "cuda_graphs": True}}
    recipe["stages"] = [{"kind": "quantize", "keep_float": [], "speed_check": None,
                         "sensitivity": {"samples": 16}}]
    out = tmp_path / "run"
    fake = FakeCudaApi(clock=lambda: time.perf_counter() * 1e3)
    with use_cuda_api(fake) if gpu == "fake" else contextlib.nullcontext():
        assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    base, int8 = r.candidates[0], r.candidates[-1]
    assert int8.precision == "int8"
    gpu_rows = [lr for lr in base.latency if lr.device == "cuda"]
    assert {(lr.setup, lr.batch) for lr in gpu_rows} == {
        (f"{p}, channels_last, CUDA graphs", b) for p in ("fp32", "fp16") for b in (1, 4)}
    for lr in gpu_rows:
        assert lr.peak_memory_mb > 0 and lr.tflops > 0
        assert 0 < lr.peak_fraction < 1 and lr.device_p50_ms > 0
        if gpu == "fake":
            assert lr.peak_fraction == pytest.approx(lr.tflops / 989.0)
            assert lr.speedup_vs_baseline == pytest.approx(1.0)
    assert not [lr for lr in int8.latency if lr.device == "cuda"]   # never the simulation
    assert "not applicable" in int8.not_timed["torch-cuda"]
    assert "torch-cuda" not in int8.top1_pct and "torch-cuda" in base.top1_pct
    md = (out / "report.md").read_text()
    assert "fp16, channels_last, CUDA graphs" in md and "not applicable" in md
    assert "TFLOP/s" in md and "of FP16 peak" in md
    if gpu == "fake":
        assert r.environment["gpu"] == "NVIDIA H100 80GB HBM3"
        assert fake.captures   # the graph path ran


@pytest.mark.parametrize("runtime", ["tensorrt", "onnxruntime-tensorrt"])
def test_tensorrt_rows_gates_and_tune_use_the_recipes_runtime_name(
        tiny_recipe_dict, write_yaml, tmp_path, monkeypatch, runtime):
    """The recipe's name is the key everywhere: latency rows, gate checks and tune's objective
    (rows were keyed ``tensorrt-cuda`` / ``onnxruntime-cuda``, so gates and tune found none)."""
    import onnxruntime

    calls: dict = {}
    if runtime == "tensorrt":
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(None, 4, calls))
    else:
        monkeypatch.setitem(sys.modules, "onnxruntime", fake_onnxruntime_gpu(onnxruntime, calls))
    recipe = dict(tiny_recipe_dict)
    recipe["bench"] = {**recipe["bench"], "runtimes": ["onnxruntime-cpu", runtime]}
    recipe["stages"] = [{"kind": "prune", "target": {"macs_ratio": 0.6}, "finetune": None}]
    recipe["gates"] = {"min_speedup": {"value": 0.01, "runtime": runtime, "batch": 1},
                       "max_latency_ms": {"value": 1e6, "runtime": runtime}}
    recipe["tune"] = {"space": {"prune.target.macs_ratio": {"low": 0.5, "high": 0.9}},
                      "latency": {"runtime": runtime, "batch": 4}}
    path, out = write_yaml(recipe), tmp_path / "run"
    with use_cuda_api(FakeCudaApi(clock=lambda: time.perf_counter() * 1e3)):
        assert main(["run", str(path), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    for c in r.candidates:
        rows = {(lr.key, lr.batch) for lr in c.latency}
        assert rows == {(rt, b) for rt in ("onnxruntime-cpu", runtime) for b in (1, 4)}
        assert c.latency_at(runtime, 4).device == "cuda"
    names = [c["name"] for c in r.gate["checks"]]
    assert names == [f"min_speedup[{runtime} b1]", f"max_latency_ms[p50 {runtime} b1]",
                     f"max_latency_ms[p50 {runtime} b4]"], names
    assert all(c["passed"] and c["measured"] is not None for c in r.gate["checks"])
    point = point_from_report(r, load_recipe(path))
    last = r.candidates[-1]
    assert point.latency_ratio == pytest.approx(
        last.latency_at(runtime, 4).p50_ms / r.candidates[0].latency_at(runtime, 4).p50_ms)
    assert calls.get("builds", 0) >= 2 or "providers" in calls   # the fake really ran
