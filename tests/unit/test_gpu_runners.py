"""GPU runtimes: real tests where CUDA / onnxruntime-gpu / TensorRT exist, skipped otherwise;
here (no GPU) the clear errors and the engine cache key are what can be checked."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from deploykit.bench import check_parity
from deploykit.errors import BackendUnavailableError
from deploykit.export import export_onnx
from deploykit.models.cifar_resnet import resnet20
from deploykit.runtimes import OrtRunner, TorchRunner, cuda_event_ms, engine_cache_key, make_runner

HAS_CUDA = torch.cuda.is_available()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")
needs_trt = pytest.mark.skipif(not (HAS_CUDA and HAS_TRT),
                               reason="TensorRT and a CUDA GPU are both needed "
                                      '(pip install "deploykit[tensorrt]")')


@pytest.fixture(scope="module")
def model_and_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = resnet20().eval()
    path = export_onnx(model, (3, 32, 32), tmp_path_factory.mktemp("gpu") / "m.onnx")
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
    return model, path, x


def test_engine_cache_key_changes_with_model_version_gpu_and_profile():
    k = engine_cache_key(b"model", "10.3.0", "H100-sm90", 64)
    assert k == engine_cache_key(b"model", "10.3.0", "H100-sm90", 64)
    assert len({k, engine_cache_key(b"model2", "10.3.0", "H100-sm90", 64),
                engine_cache_key(b"model", "10.4.0", "H100-sm90", 64),
                engine_cache_key(b"model", "10.3.0", "L4-sm89", 64),
                engine_cache_key(b"model", "10.3.0", "H100-sm90", 16)}) == 5


def test_cuda_event_timing_skips_warmup_and_records_on_the_stream(monkeypatch):
    """The event loop shared by the torch-CUDA and TensorRT runners, with a fake clock for
    CUDA events: call i of ``step`` takes i ms; only the calls after warm-up are timed."""
    clock = {"t": 0.0, "streams": []}

    class FakeEvent:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self, stream=None):
            self.t = clock["t"]
            clock["streams"].append(stream)

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return end.t - self.t

    calls = []

    def step():
        calls.append(1)
        clock["t"] += len(calls)

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    assert cuda_event_ms(step, iterations=3, warmup=2, stream="s") == [3.0, 4.0, 5.0]
    assert len(calls) == 5 and set(clock["streams"]) == {"s"}


@pytest.mark.skipif(HAS_CUDA, reason="checks the error raised when there is no GPU")
@pytest.mark.parametrize("runtime", ["torch-cuda", "tensorrt"])
def test_gpu_runtime_without_a_gpu_is_a_clear_error(runtime, model_and_onnx):
    model, path, _ = model_and_onnx
    with pytest.raises(BackendUnavailableError, match="CUDA GPU"):
        make_runner(runtime, model, path)


@pytest.mark.skipif(HAS_TRT, reason="checks the error raised when TensorRT is missing")
def test_missing_tensorrt_names_the_extra(monkeypatch, model_and_onnx):
    from fake_gpu import FakeCudaApi

    from deploykit.runtimes import TensorRTRunner, use_cuda_api

    with (use_cuda_api(FakeCudaApi()),
          pytest.raises(BackendUnavailableError, match=r'pip install "deploykit\[tensorrt\]"')):
        TensorRTRunner(model_and_onnx[1])


def test_missing_onnxruntime_gpu_provider_names_the_extra(model_and_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu with CUDA is installed here")
    with pytest.raises(BackendUnavailableError, match=r'deploykit\[gpu\]'):
        make_runner("onnxruntime-cuda", onnx_path=model_and_onnx[1])


@needs_cuda
@pytest.mark.parametrize(("precision", "channels_last", "graphs", "tol"),
                         [("fp32", False, False, 1e-2), ("fp16", True, False, 5e-2),
                          ("fp32", True, True, 1e-2)])
def test_torch_cuda_runner_matches_cpu(model_and_onnx, precision, channels_last, graphs, tol):
    from deploykit.runtimes import TorchCudaRunner

    model, _, x = model_and_onnx
    import copy

    runner = TorchCudaRunner(copy.deepcopy(model), precision, channels_last, graphs)
    res = check_parity(TorchRunner(model), runner, [x, x[:1]], max_abs_error=tol)
    assert res.top1_agreement == 1.0
    assert len(runner.device_ms(x, iterations=5, warmup=2)) == 5


@needs_cuda
def test_onnxruntime_cuda_provider_matches_cpu(model_and_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip('onnxruntime-gpu is not installed (pip install "deploykit[gpu]")')
    _, path, x = model_and_onnx
    check_parity(OrtRunner(path), make_runner("onnxruntime-cuda", onnx_path=path), [x],
                 max_abs_error=1e-2)


@needs_trt
def test_tensorrt_engine_builds_matches_and_is_cached(model_and_onnx, tmp_path):
    from deploykit.runtimes import TensorRTRunner

    model, path, x = model_and_onnx
    first = TensorRTRunner(path, cache_dir=tmp_path, max_batch=8)
    assert not first.cache_hit and first.engine_path.is_file()
    check_parity(TorchRunner(model), first, [x, x[:1]], max_abs_error=1e-2)
    second = TensorRTRunner(path, cache_dir=tmp_path, max_batch=8)
    assert second.cache_hit and second.engine_path == first.engine_path


def test_every_runner_returns_named_outputs_the_torch_ones_as_the_onnx_file_names_them(tmp_path):
    """A module with several outputs (a detector's boxes, scores, labels): the PyTorch runner
    names them by the module's ``output_names``, as ONNX Runtime does by the file's, and keeps
    integer outputs integer; ``__call__`` is the first output on both."""

    class ThreeOut(torch.nn.Module):
        output_names = ("boxes", "scores", "labels")

        def forward(self, x):
            return x * 2, x.sum(1), x.argmax(1)

    model = ThreeOut()
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    path = tmp_path / "three.onnx"
    torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False,
                      input_names=["images"], output_names=list(ThreeOut.output_names))
    eager, ort = TorchRunner(model).run_all(x), OrtRunner(path).run_all(x)
    assert list(eager) == list(ort) == ["boxes", "scores", "labels"]
    for k in eager:
        np.testing.assert_allclose(eager[k], ort[k], rtol=1e-6)
    assert eager["labels"].dtype == np.int64 and eager["scores"].dtype == np.float32
    np.testing.assert_allclose(TorchRunner(model)(x), OrtRunner(path)(x))
