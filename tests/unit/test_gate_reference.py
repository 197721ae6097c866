"""The latency-regression gate against a reference a slower machine cannot fool: a whole
benchmark under a uniform slowdown passes, a model made ~30% heavier fails."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from report_factory import make_report

from deploykit.gate import evaluate_gates
from deploykit.gate.regression import RETIMED, SCALED, STORED
from deploykit.recipe import GateSpec
from deploykit.runtimes import OrtRunner


def _conv_stack(path, layers: int) -> None:
    """A conv stack whose cost grows with ``layers`` (3 -> 4 layers: about 33% heavier)."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((32, 32, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"y{i}"], pads=[1, 1, 1, 1]))
        prev = f"y{i}"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32, 40, 40])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", 32, 40, 40])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def _runs(tmp_path, new_layers: int, slow_factor: float):
    """An earlier run (3 layers) and a new one (``new_layers``) whose stored latencies were
    measured on a machine ``slow_factor`` times slower."""
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    for d, layers in ((old_dir, 3), (new_dir, new_layers)):
        d.mkdir()
        _conv_stack(d / "prune.onnx", layers)
    old = make_report(cand_ms={1: 1.0})
    new = make_report(cand_ms={1: 1.0 * slow_factor * new_layers / 3})
    return old, new, (old_dir, new_dir)


def _gate(new, old, dirs, pct=10.0):
    spec = GateSpec(candidate="prune", max_latency_regression={"value": pct, "batch": 1})
    return evaluate_gates(new, spec, old, dirs)


def test_a_uniformly_slower_machine_is_not_a_regression_when_re_timed(tmp_path, monkeypatch):
    old, new, dirs = _runs(tmp_path, new_layers=3, slow_factor=2.0)
    assert not _gate(new, old, (None, None)).passed   # stored numbers alone cry wolf (+100%)
    call = OrtRunner.__call__

    def slowed(self, x):   # every timed call of the re-timing is slowed alike, too
        time.sleep(0.0005)
        return call(self, x)

    monkeypatch.setattr(OrtRunner, "__call__", slowed)
    res = _gate(new, old, dirs)
    assert res.passed, res.checks[0].message
    assert res.checks[0].reference == RETIMED and "re-timed" in res.checks[0].message


def test_a_model_made_heavier_fails_when_re_timed(tmp_path):
    old, new, dirs = _runs(tmp_path, new_layers=4, slow_factor=1.0)
    res = _gate(new, old, dirs)
    assert not res.passed and res.checks[0].reference == RETIMED
    assert res.checks[0].measured == pytest.approx(33, abs=15)   # 4 convs vs 3


def test_stored_latencies_are_scaled_by_the_yardsticks(tmp_path):
    old, new, _ = _runs(tmp_path, new_layers=3, slow_factor=2.0)
    old.environment["yardstick_ms"], new.environment["yardstick_ms"] = 1.0, 2.0
    res = _gate(new, old, (None, None))
    assert res.passed and res.checks[0].reference.startswith(SCALED)
    heavier = make_report(cand_ms={1: 2.0 * 1.3})
    heavier.environment["yardstick_ms"] = 2.0
    res = _gate(heavier, old, (None, None))
    assert not res.passed and res.checks[0].measured == pytest.approx(30, abs=3)
    old.environment.pop("yardstick_ms")
    assert _gate(new, old, (None, None)).checks[0].reference == STORED
