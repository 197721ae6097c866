"""The whole chain on a representative subset of the model zoo, as a new user would run it.

Random weights, synthetic data at a small input, a short baseline epoch, ``prune`` to half
the MACs, PTQ INT8 for ONNX Runtime's CPU EP, export, parity, and the report. The full sweep
over every torchvision model is ``benchmarks/zoo/run_zoo.py``.
"""

from __future__ import annotations

import onnx
import pytest

import deploykit
from deploykit.recipe import parse_recipe

pytestmark = pytest.mark.slow

# (source, name, input): plain CNNs, bottlenecks, mobile nets (depthwise, squeeze-excite,
# hard-swish), fire modules, RegNets, inception branches with auxiliary heads, ConvNeXt
# (LayerNorm, GELU, layer scale), ShuffleNet (channel shuffle: layers left whole),
# EfficientNet (SiLU, stochastic depth), and the built-in CIFAR nets (densenet121 takes 7 minutes
# here: the sweep covers it)
MODELS = [
    ("builtin", "resnet20", 32),
    ("builtin", "mobilenet_v2_cifar", 32),
    ("torchvision", "resnet18", 32),
    ("torchvision", "resnet50", 32),
    ("torchvision", "mobilenet_v2", 32),
    ("torchvision", "mobilenet_v3_small", 32),
    ("torchvision", "mnasnet0_5", 32),
    ("torchvision", "squeezenet1_1", 32),
    ("torchvision", "regnet_x_400mf", 32),
    ("torchvision", "regnet_y_400mf", 32),
    ("torchvision", "googlenet", 32),
    ("torchvision", "convnext_tiny", 32),
    ("torchvision", "shufflenet_v2_x0_5", 32),
    ("torchvision", "efficientnet_b0", 32),
]


def _recipe(source: str, name: str, size: int) -> dict:
    return {
        "name": f"zoo-{name}", "seed": 0,
        "model": {"source": source, "name": name, "num_classes": 4},
        "data": {"kind": "synthetic", "image_size": size, "batch_size": 8,
                 "eval_batch_size": 16, "synthetic_samples": 32, "calib_samples": 16},
        "train": {"epochs": 1, "lr": 0.002, "schedule": "constant", "grad_clip": 1.0},
        "stages": [
            {"kind": "prune", "importance": "l1",
             "target": {"macs_ratio": 0.5, "tolerance": 0.05}, "round_to": 8},
            {"kind": "quantize", "calibration": {"method": "minmax"}, "speed_check": None}],
        "bench": {"runtimes": ["onnxruntime-cpu"], "batch_sizes": [1], "warmup": 1,
                  "iterations": 5, "target_rel_ci": None, "accuracy": False},
    }


@pytest.mark.parametrize(("source", "name", "size"), MODELS, ids=[m[1] for m in MODELS])
def test_chain_prunes_quantizes_exports_and_reports(source, name, size, tmp_path):
    out = tmp_path / "run"
    report = deploykit.run(parse_recipe(_recipe(source, name, size), name, check_paths=False),
                           out)
    assert [c.name for c in report.candidates] == ["baseline", "prune", "ptq-int8"]
    base, pruned, q = report.candidates
    # MACs shrink to about half (the stage reports when its target was missed)
    assert pruned.macs < 0.6 * base.macs and pruned.params < base.params
    # parity held (the run raises otherwise) and is recorded for every artifact
    assert pruned.parity["max_error_vs_range"] <= 1e-4 or pruned.parity["max_abs_error"] <= 1e-3
    # INT8: within 10% of the logit range, or within twice the simulation's own rounding
    # noise where that is larger (random-weight EfficientNets)
    floor = q.parity["noise_floor_vs_range"]
    assert floor is not None
    assert q.parity["max_error_vs_range"] <= max(0.1, 2 * floor)
    if floor <= 0.05:
        assert q.parity["top1_agreement_beyond_ties"] >= 0.95
    if name.startswith("shufflenet"):
        assert report.stages[1]["metrics"]["left_whole"]
    # INT8 layers are INT8: every conv/linear but the ones kept float, and the ONNX carries
    # the quantized weights
    precision = q.arch["layer_precision"]
    assert {n for n, p in precision.items() if p == "fp32"} == set(q.keep_float)
    assert sum(p == "int8" for p in precision.values()) >= len(precision) - len(q.keep_float)
    graph = onnx.load(str(out / q.onnx_file)).graph
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) >= \
        sum(p == "int8" for p in precision.values())
    # the report lists every candidate, with ONNX Runtime latency for each
    md = (out / "report.md").read_text()
    for c in report.candidates:
        assert f"| {c.name} |" in md and c.latency_at("onnxruntime-cpu", 1) is not None
