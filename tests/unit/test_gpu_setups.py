"""GPU set-ups without a GPU: the ``bench.gpu`` section, the torch-cuda runner's precision,
channels-last, CUDA-graph, timing and memory paths against a fake CUDA API and clock, INT8 never
timed as its simulation, TensorRT and onnxruntime-gpu against fakes of their APIs."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
from fake_gpu import (
    LAUNCH_MS,
    MS_PER_MELEM,
    FakeCudaApi,
    costed,
    fake_onnxruntime_gpu,
    fake_tensorrt,
)
from torch import nn

from deploykit.errors import BackendUnavailableError, RecipeError
from deploykit.export import export_onnx
from deploykit.recipe import GpuBenchSpec, parse_recipe
from deploykit.runtimes import (
    INT8_ON_TORCH_CUDA,
    OrtRunner,
    TensorRTRunner,
    TorchCudaRunner,
    make_runner,
    make_runners,
    peak_fp16_tflops,
    provider_options,
    use_cuda_api,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4)).eval()


X = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize(("gpu", "match"), [
    ({"precisions": ["fp8"]}, r"bench\.gpu\.precisions\[0\]"),
    ({"precisions": []}, r"bench\.gpu\.precisions"),
    ({"precisions": ["fp16", "fp16"]}, "twice"),
    ({"compile": True}, "cuda_graphs: false"),
    ({"device": -1}, r"bench\.gpu\.device"),
    ({"graphs": True}, r"bench\.gpu\.graphs"),
])
def test_bad_bench_gpu_values_are_errors_naming_the_key(tiny_recipe_dict, gpu, match):
    tiny_recipe_dict["bench"]["gpu"] = gpu
    with pytest.raises(RecipeError, match=match):
        parse_recipe(tiny_recipe_dict, "r.yaml")


def test_bench_gpu_defaults_are_what_gpu_users_deploy(tiny_recipe_dict):
    assert parse_recipe(tiny_recipe_dict).bench.gpu == GpuBenchSpec(
        precisions=["fp16"], channels_last=True, cuda_graphs=True, compile=False, device=0)
    tiny_recipe_dict["bench"]["gpu"] = {"precisions": ["fp32", "bf16"], "cuda_graphs": False,
                                        "compile": True, "device": 1}
    gpu = parse_recipe(tiny_recipe_dict).bench.gpu
    assert gpu.precisions == ["fp32", "bf16"] and gpu.compile and gpu.device == 1


@pytest.mark.parametrize(("precision", "dtype", "tol"), [
    ("fp32", torch.float32, 1e-5), ("fp16", torch.float16, 2e-2), ("bf16", torch.bfloat16, 1e-1)])
def test_precision_and_channels_last_reach_every_convolution(precision, dtype, tol):
    api, seen = FakeCudaApi(), []
    ref = _net()
    with use_cuda_api(api):
        runner = TorchCudaRunner(costed(copy.deepcopy(ref), api, seen), precision,
                                 channels_last=True)
        out = runner(X)
    assert out.dtype == np.float32 and out.shape == (2, 4)
    with torch.no_grad():
        np.testing.assert_allclose(out, ref(torch.from_numpy(X)).numpy(), atol=tol, rtol=tol)
    assert seen == [(dtype, True), (dtype, True)]
    assert runner.setup == f"{precision}, channels_last, eager"


def test_cuda_graphs_capture_once_per_shape_and_replay_new_inputs():
    api = FakeCudaApi()
    ref = _net()
    with use_cuda_api(api):
        runner = TorchCudaRunner(costed(copy.deepcopy(ref), api), "fp32", cuda_graphs=True)
        a, b = X, X[::-1].copy()
        out_a, out_b, out_1 = runner(a), runner(b), runner(a[:1])
    assert api.captures == [(2, 3, 16, 16), (1, 3, 16, 16)] and api.replays == 3
    with torch.no_grad():   # the replay read the new input, not the captured one
        np.testing.assert_allclose(out_b, ref(torch.from_numpy(b)).numpy(), atol=1e-5)
        np.testing.assert_allclose(out_1, ref(torch.from_numpy(a[:1])).numpy(), atol=1e-5)
    np.testing.assert_allclose(out_a, out_b[::-1], atol=1e-5)
    assert runner.setup == "fp32, NCHW, CUDA graphs"


def test_device_time_on_the_fake_clock_drops_launches_in_graphs_and_halves_in_fp16():
    """8 kernels per forward: eager pays 8 launches, a replayed graph none; fp16 halves the
    per-element compute. The fake clock makes every figure exact."""
    elems = 2 * (5 * 8 * 16 * 16 + 8 + 8 + 4)   # outputs of the 8 leaf modules, batch 2
    compute = elems / 1e6 * MS_PER_MELEM
    times = {}
    for precision, graphs in [("fp32", False), ("fp32", True), ("fp16", True)]:
        api = FakeCudaApi()
        with use_cuda_api(api):
            runner = TorchCudaRunner(costed(_net(), api), precision, cuda_graphs=graphs)
            times[(precision, graphs)] = runner.device_ms(X, iterations=4, warmup=2)
        assert len(times[(precision, graphs)]) == 4
    assert times[("fp32", False)] == pytest.approx([compute + 8 * LAUNCH_MS] * 4)
    assert times[("fp32", True)] == pytest.approx([compute] * 4)
    assert times[("fp16", True)] == pytest.approx([compute / 2] * 4)


def test_peak_memory_counts_weights_and_grows_with_the_batch():
    api = FakeCudaApi()
    with use_cuda_api(api):
        runner = TorchCudaRunner(costed(_net(), api), "fp16")
        small, big = runner.peak_memory_mb(X[:1]), runner.peak_memory_mb(np.repeat(X, 32, 0))
    weights = sum(p.numel() for p in _net().parameters()) * 2 / 1e6
    assert weights < small < big


def test_an_int8_candidate_is_never_timed_as_its_simulation_on_torch_cuda():
    with use_cuda_api(FakeCudaApi()):
        with pytest.raises(BackendUnavailableError, match="not applicable"):
            make_runner("torch-cuda", _net(), precision="int8")
        assert make_runners("torch-cuda", _net(), None, 1, "int8", 8, GpuBenchSpec()) == []
        made = make_runners("torch-cuda", _net(), None, 1, "fp32", 8,
                            GpuBenchSpec(precisions=["fp32", "fp16"]))
    assert [r.precision for r in made] == ["fp32", "fp16"]
    assert "tensorrt" in INT8_ON_TORCH_CUDA


def test_a_device_index_the_machine_lacks_is_an_error_naming_the_key():
    with use_cuda_api(FakeCudaApi(count=1)), pytest.raises(
            BackendUnavailableError, match=r"bench\.gpu\.device is 2.*1 GPU"):
        make_runner("torch-cuda", _net(), gpu=GpuBenchSpec(device=2))


def test_fp16_peak_comes_from_the_table_or_is_measured():
    assert peak_fp16_tflops("NVIDIA H100 80GB HBM3") == (989.0, "table")
    assert peak_fp16_tflops("NVIDIA H100 PCIe") == (756.0, "table")
    assert peak_fp16_tflops("NVIDIA L4") == (121.0, "table")
    assert peak_fp16_tflops("Imaginary GPU 9", lambda: 123.0) == (123.0, "measured")


def test_onnxruntime_gpu_providers_get_their_options_and_io_binding(tmp_path, monkeypatch):
    import onnxruntime

    calls: dict = {}
    path = export_onnx(_net(), (3, 16, 16), tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", fake_onnxruntime_gpu(onnxruntime, calls))
    runner = make_runner("onnxruntime-tensorrt", onnx_path=path, precision="int8",
                         gpu=GpuBenchSpec(device=1))
    trt, cuda, cpu = calls["providers"]
    assert trt[0] == "TensorrtExecutionProvider" and cpu == "CPUExecutionProvider"
    assert trt[1]["device_id"] == 1 and trt[1]["trt_int8_enable"] and trt[1]["trt_fp16_enable"]
    assert trt[1]["trt_engine_cache_enable"] and trt[1]["trt_engine_cache_path"] == str(
        tmp_path / "trt-cache")
    assert cuda == ("CUDAExecutionProvider", {"device_id": 1,
                                              "cudnn_conv_algo_search": "EXHAUSTIVE",
                                              "do_copy_in_default_stream": True})
    assert runner.device == "cuda" and runner.setup == "TensorRT EP, FP16 allowed"
    assert len(runner.device_ms(X, iterations=3, warmup=2)) == 3
    assert calls["iobinding_runs"] == 5 and calls["input_on"] == ("cuda", 1)
    assert [o[1:] for o in calls["bound_outputs"]] == [("cuda", 1)]
    cuda_only = OrtRunner(path, provider="CUDAExecutionProvider")
    assert cuda_only.providers[0][0] == "CUDAExecutionProvider"
    assert provider_options("TensorrtExecutionProvider", fp16=False)[0][1]["trt_fp16_enable"] \
        is False


def test_tensorrt_engine_is_built_once_cached_by_key_and_matches_torch(tmp_path, monkeypatch):
    calls: dict = {}
    net = _net()
    path = export_onnx(net, (3, 16, 16), tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(net, 4, calls))
    api = FakeCudaApi()
    with use_cuda_api(api):
        first = TensorRTRunner(path, max_batch=8, cache_dir=tmp_path / "cache")
        out = first(X)
        again = TensorRTRunner(path, max_batch=8, cache_dir=tmp_path / "cache")
        ms = again.device_ms(X, iterations=3, warmup=1)
    assert calls["builds"] == 1 and not first.cache_hit and again.cache_hit
    assert first.engine_path == again.engine_path and first.engine_path.is_file()
    assert calls["network_flags"] == 1 << 5   # strongly typed: precisions from the file
    assert calls["profile"] == ("input", (1, 3, 16, 16), (8, 3, 16, 16), (8, 3, 16, 16))
    with torch.no_grad():
        np.testing.assert_allclose(out, net(torch.from_numpy(X)).numpy(), atol=1e-5)
    assert len(ms) == 3 and set(calls["streams"]) == {1234}
    with use_cuda_api(FakeCudaApi(name="NVIDIA L4")):   # another GPU: another engine
        other = TensorRTRunner(path, max_batch=8, cache_dir=tmp_path / "cache")
    assert other.engine_path != first.engine_path and calls["builds"] == 2
