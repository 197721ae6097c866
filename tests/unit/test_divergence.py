"""Parity failures name the first exported tensor that departs from PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from deploykit.bench import check_parity, find_divergence, module_outputs
from deploykit.errors import ParityError
from deploykit.export import export_onnx
from deploykit.models.cifar_resnet import resnet20
from deploykit.runtimes import OrtRunner, TorchRunner


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = resnet20().eval()
    path = export_onnx(model, (3, 16, 16), tmp_path_factory.mktemp("div") / "m.onnx")
    return model, path


def _plant_fault(path, out, module: str) -> None:
    """Scale one output channel of the conv that produces ``module``'s output by 1.5."""
    proto = onnx.load(str(path))
    node_name = {m: n for m, _, n, _ in module_outputs(proto)}[module]
    node = next(n for n in proto.graph.node if n.name == node_name)
    init = next(i for i in proto.graph.initializer if i.name == node.input[1])
    w = numpy_helper.to_array(init).copy()
    w[0] *= 1.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(proto, str(out))


def test_module_outputs_follow_the_graph_and_include_submodules(exported):
    _, path = exported
    outs = module_outputs(onnx.load(str(path)))
    names = [m for m, *_ in outs]
    assert names.index("layer1.0.bn1") < names.index("layer2.0.bn1") < names.index("fc")
    block = dict((m, op) for m, _, _, op in outs)
    assert block["layer1.0"] == "Relu"      # a block ends with its final ReLU, not the Add


def test_a_clean_export_has_no_divergence(exported):
    model, path = exported
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16), dtype=np.float32)
    assert find_divergence(model, path, x) is None


def test_a_planted_fault_is_caught_and_the_layer_named(exported, tmp_path):
    model, path = exported
    bad = tmp_path / "bad.onnx"
    _plant_fault(path, bad, "layer2.1.bn2")
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16), dtype=np.float32)
    div = find_divergence(model, bad, x)
    assert div is not None and div.module == "layer2.1.bn2" and div.op_type == "Conv"
    assert "layer2.1.bn2" in str(div)
    with pytest.raises(ParityError):
        check_parity(TorchRunner(model), OrtRunner(bad), [x], max_abs_error=1e-4)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("runtime", ["onnxruntime-cpu", "tensorrt"])
def test_the_failing_runtime_runs_the_marked_model(exported, tmp_path, runtime):
    """The search runs the marked model on the runtime that failed parity: ONNX Runtime here,
    a TensorRT engine (network outputs = the marked tensors) where TensorRT and a GPU exist."""
    if runtime == "tensorrt" and not (_have("tensorrt") and torch.cuda.is_available()):
        pytest.skip("TensorRT and a CUDA GPU are needed (pip install \"deploykit[tensorrt]\"); "
                    "the project's machines have neither")
    model, path = exported
    bad = tmp_path / "bad.onnx"
    _plant_fault(path, bad, "layer3.0.bn1")
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16), dtype=np.float32)
    div = find_divergence(model, bad, x, tolerance=1e-2, runtime=runtime)
    assert div is not None and div.module == "layer3.0.bn1"
    assert find_divergence(model, path, x, tolerance=1e-2, runtime=runtime) is None
