"""benchmarks/gpu/run_gpu.py, the script a person runs on a GPU machine, run here on a fake GPU
(tiny inputs) so that it is not found broken only when a GPU is at hand."""

from __future__ import annotations

import importlib.util
import statistics
import time
from pathlib import Path

import pytest
import torchvision
from fake_gpu import FakeCudaApi

from deploykit.runtimes import use_cuda_api

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "run_gpu.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("run_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_gpu_script_measures_prunes_tabulates_and_writes_the_readme(script, tmp_path):
    api = FakeCudaApi(clock=lambda: time.perf_counter() * 1e3)

    def plain(model, x, iterations, warmup):
        return statistics.median(api.time_ms(lambda: model(x), iterations, warmup))

    with use_cuda_api(api):
        rows = script.measure({"resnet18": lambda: torchvision.models.resnet18(num_classes=10)},
                              size=32, batches=(1, 2), iterations=3, warmup=1, plain=plain)
    assert [(r["setup"], r["batch"]) for r in rows] == [
        (s, b) for s in ("fp32, NCHW, eager", "fp16, channels_last, eager",
                         "fp16, channels_last, CUDA graphs", "bf16, channels_last, CUDA graphs")
        for b in (1, 2)]
    for r in rows:
        assert 0.4 <= r["macs_ratio"] <= 0.6
        assert r["speedup"] == pytest.approx(r["float_ms"] / r["pruned_ms"])
        assert r["float_peak_fraction"] == pytest.approx(r["float_tflops"] / 989.0)
        assert r["pruned_mem_mb"] < r["float_mem_mb"]
        assert ("plain_speedup" in r) == (r["setup"] == "fp32, NCHW, eager")
    text = script.table(rows)
    assert text.count("\n| resnet18") == len(rows)
    assert any("plain CUDA-event loop" in t for t in script.targets(rows))
    readme = tmp_path / "README.md"
    readme.write_text(f"# GPU\n\nbefore\n{script.START}\nnot measured\n{script.END}\nafter\n")
    script.write_readme(text, readme)
    body = readme.read_text()
    assert "not measured" not in body and "before" in body and "after" in body
    assert body.count(script.START) == 1 and "| resnet18 (" in body
