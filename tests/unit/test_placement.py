"""Does INT8 pay? The placement search with injected timings, and the report's recommendation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from report_factory import latency, make_report
from torch import nn

from deploykit.quant import SCHEMES, build_quantized
from deploykit.recipe import QuantizeSpec, SpeedCheckSpec
from deploykit.report import int8_recommendation
from deploykit.stages import placement as placement_mod
from deploykit.stages.placement import Placement, candidate_placements, check_speed

SHAPE = (3, 16, 16)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()


def _setup(monkeypatch, ms: dict[str, dict[int, float]], top1: dict[str, float] | None = None):
    """The real placements of a small net, with ONNX Runtime timings (and optionally top-1)
    replaced by ``ms`` / ``top1`` keyed by placement name."""
    model = _net()
    calib = [torch.randn(8, *SHAPE) for _ in range(2)]
    batches = [(torch.randn(8, *SHAPE), torch.randint(0, 4, (8,)))]
    scheme = SCHEMES["onnxruntime-cpu"]

    def build(p: Placement):
        qm = build_quantized(model, QuantizeSpec(), p.keep_float, calib,
                             dataclasses.replace(scheme, int8_maxpool=p.int8_maxpool,
                                                 per_channel_weights=not p.per_tensor_weights))
        qm.placement_name = p.name
        return qm

    calls = []

    def fake_time(paths, shape, batch_sizes, threads, iterations, runtime="onnxruntime-cpu"):
        calls.append(sorted(paths) if runtime == "onnxruntime-cpu" else (runtime, sorted(paths)))
        return {name: ms[name] for name in paths}

    monkeypatch.setattr(placement_mod, "time_onnx_files", fake_time)
    if top1 is not None:
        monkeypatch.setattr(placement_mod, "accuracy_on",
                            lambda qm, _batches: top1[qm.placement_name])
    options = candidate_placements(["0", "7"], [], has_maxpool=True,
                                   scheme_pools_int8=scheme.int8_maxpool)
    return model, build, options, batches, calls


def test_the_placements_tried_are_every_layer_int8_int8_max_pools_and_per_tensor_weights():
    options = candidate_placements(["0", "7"], [], True, False)
    assert [p.name for p in options] == [
        "configured", "every layer INT8", "configured, INT8 max-pools",
        "every layer INT8, INT8 max-pools", "every layer INT8, INT8 max-pools, per-tensor weights"]
    assert options[-1].per_tensor_weights and options[-1].keep_float == ()
    assert not any(p.per_tensor_weights for p in options[:-1])
    assert [p.name for p in candidate_placements(["0"], ["0"], False, False)] == [
        "configured", "configured, per-tensor weights"]


def test_a_configured_placement_that_pays_is_kept_without_searching(monkeypatch):
    ms = {"float": {1: 1.0, 64: 40.0}, "configured": {1: 0.8, 64: 30.0}}
    model, build, options, batches, calls = _setup(monkeypatch, ms)
    check, _, chosen = check_speed(model, build, options, batches, 50.0, SHAPE,
                                    SpeedCheckSpec())
    assert check.int8_pays and check.chosen == "configured" and chosen.keep_float == ("0", "7")
    assert calls == [["configured", "float"]]        # timed once, nothing else built
    assert check.trials[0].speedup_vs_float == {1: pytest.approx(1.25), 64: pytest.approx(4 / 3)}


def test_the_speed_check_times_on_the_target_s_runtime(monkeypatch):
    ms = {"float": {1: 1.0, 64: 40.0}, "configured": {1: 0.8, 64: 30.0}}
    model, build, options, batches, calls = _setup(monkeypatch, ms)
    check, _, _ = check_speed(model, build, options, batches, 50.0, SHAPE, SpeedCheckSpec(),
                              runtime="openvino-cpu")
    assert calls == [("openvino-cpu", ["configured", "float"])]
    assert check.runtime == "openvino-cpu" and "INT8 pays on openvino-cpu" in check.note


def test_when_int8_is_slower_the_fastest_placement_is_kept(monkeypatch):
    ms = {"float": {1: 1.0, 64: 40.0},
          "configured": {1: 1.2, 64: 38.0},                      # slower at batch 1
          "every layer INT8": {1: 0.9, 64: 30.0},                # fastest at both
          "configured, INT8 max-pools": {1: 1.1, 64: 35.0},
          "every layer INT8, INT8 max-pools": {1: 0.95, 64: 31.0},
          "every layer INT8, INT8 max-pools, per-tensor weights": {1: 0.92, 64: 33.0}}
    model, build, options, batches, calls = _setup(monkeypatch, ms)
    check, qm, chosen = check_speed(model, build, options, batches, 0.0, SHAPE,
                                    SpeedCheckSpec())
    assert check.int8_pays and check.chosen == "every layer INT8"
    assert chosen.keep_float == () and qm.placement_name == "every layer INT8"
    assert len(calls) == 2 and len(calls[1]) == 6     # then every placement, alternately
    assert "INT8 pays" in check.note


def test_a_faster_placement_outside_the_accuracy_bound_is_not_kept(monkeypatch):
    ms = {"float": {1: 1.0, 64: 40.0}, "configured": {1: 1.2, 64: 38.0},
          "every layer INT8": {1: 0.5, 64: 20.0},                # fastest, but loses 3 points
          "configured, INT8 max-pools": {1: 0.9, 64: 35.0},
          "every layer INT8, INT8 max-pools": {1: 0.6, 64: 21.0},
          "every layer INT8, INT8 max-pools, per-tensor weights": {1: 0.55, 64: 20.0}}
    top1 = {"configured": 79.5, "every layer INT8": 77.0, "configured, INT8 max-pools": 79.4,
            "every layer INT8, INT8 max-pools": 77.2,
            "every layer INT8, INT8 max-pools, per-tensor weights": 76.0}
    model, build, options, batches, _ = _setup(monkeypatch, ms, top1)
    check, _, chosen = check_speed(model, build, options, batches, 80.0, SHAPE,
                                   SpeedCheckSpec(max_accuracy_drop=1.0))
    assert check.chosen == "configured, INT8 max-pools" and chosen.int8_maxpool
    assert check.int8_pays


def test_when_every_placement_is_slower_int8_does_not_pay(monkeypatch):
    ms = {"float": {1: 1.0, 64: 40.0}, "configured": {1: 1.3, 64: 44.0},
          "every layer INT8": {1: 1.1, 64: 42.0}, "configured, INT8 max-pools": {1: 1.4, 64: 45},
          "every layer INT8, INT8 max-pools": {1: 1.2, 64: 41.0},
          "every layer INT8, INT8 max-pools, per-tensor weights": {1: 1.15, 64: 43.0}}
    model, build, options, batches, _ = _setup(monkeypatch, ms)
    check, _, _ = check_speed(model, build, options, batches, 0.0, SHAPE, SpeedCheckSpec())
    assert not check.int8_pays
    assert check.chosen == "every layer INT8"         # the best worst case: 1/1.1 at batch 1
    assert "does not pay on this machine" in check.note and "deploy the float" in check.note


def test_per_tensor_weights_are_kept_when_fastest_and_export_one_scale(monkeypatch, tmp_path):
    import onnx
    from onnx import numpy_helper

    from deploykit.export import export_onnx
    from deploykit.runtimes import OrtRunner

    ms = {"float": {1: 1.0, 64: 40.0}, "configured": {1: 1.2, 64: 38.0},
          "every layer INT8": {1: 1.05, 64: 39.0},
          "configured, INT8 max-pools": {1: 1.1, 64: 39.5},
          "every layer INT8, INT8 max-pools": {1: 1.02, 64: 39.0},
          "every layer INT8, INT8 max-pools, per-tensor weights": {1: 0.9, 64: 36.0}}
    model, build, options, batches, _ = _setup(monkeypatch, ms)
    check, qm, chosen = check_speed(model, build, options, batches, 0.0, SHAPE,
                                    SpeedCheckSpec())
    assert check.chosen == "every layer INT8, INT8 max-pools, per-tensor weights"
    assert chosen.per_tensor_weights and check.int8_pays
    assert check.trials[-1].per_tensor_weights
    path = export_onnx(qm, SHAPE, tmp_path / "pt.onnx")
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        ref = qm(x).numpy()
    got = OrtRunner(path)(x.numpy())
    assert abs(got - ref).max() <= 0.05 * abs(ref).max()   # ONNX Runtime runs what was simulated
    graph = onnx.load(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weight_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weight_dq) == 3   # both convs and the linear layer, every scale a scalar
    assert all(inits[n.input[0]].dtype.name == "int8" for n in weight_dq)
    assert all(inits[n.input[1]].size == 1 for n in weight_dq)


def _with_int8(int8_ms: dict[int, float]):
    r = make_report()
    prune = r.candidates[1]
    r.candidates.append(dataclasses.replace(
        prune, name="ptq-int8", precision="int8",
        latency=[latency(ms, b, seed=300 + b) for b, ms in int8_ms.items()]))
    return r


def test_the_report_recommends_the_float_twin_when_int8_is_slower():
    slow = _with_int8({1: 1.2, 64: 18.0})             # prune: 1.0 / 20 ms
    note = int8_recommendation(slow)
    assert note is not None and "ptq-int8 is slower than its float twin prune" in note
    assert "batch 1 on onnxruntime-cpu" in note and "batch 64" not in note
    assert note.endswith("deploy prune")
    assert int8_recommendation(_with_int8({1: 0.8, 64: 18.0})) is None
    slow.recommendation = note
    assert f"recommendation: {note}" in slow.to_markdown()


def test_onnx_runtime_runs_the_qdq_export_as_qoperator_kernels(tmp_path):
    """Why QOperator is not a separate placement: ONNX Runtime fuses every QDQ conv / linear
    of the export into QLinearConv / QGemm when it loads the model."""
    import collections

    import onnx
    import onnxruntime as ort

    from deploykit.export import export_onnx

    qm = build_quantized(_net(), QuantizeSpec(), [], [torch.randn(8, *SHAPE)])
    path = export_onnx(qm, SHAPE, tmp_path / "q.onnx")
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    assert ops["QLinearConv"] == 2 and ops["QGemm"] == 1
    assert ops["Conv"] == 0 and ops["Gemm"] == 0 and ops["MatMul"] == 0
