"""L18 quantization benchmark: ONNX Runtime CPU latency of each INT8 scheme and the full chain.

torchvision resnet18 and mobilenet_v2 at 224x224 with random weights (latency does not depend
on the weights; calibration uses random images). Candidates, timed alternately in one process
against the float model at batch 1 and 16 with 2 threads:

- int8 for onnxruntime-cpu (uint8 activations), first/last layers float, and none float;
- int8 for tensorrt (signed symmetric activations), first/last float, run in ONNX Runtime;
- the chain, once per ``--round-to``: prune to 0.5x MACs (l1) then int8 (onnxruntime-cpu,
  first/last float);
- the peer chain for reference: the same pruned float ONNX quantized by ONNX Runtime's own
  ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, first/last excluded).

Usage: python benchmarks/quantize/run_l18.py [--models resnet18 mobilenet_v2] [--round-to 8 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ort_latency, save_results, stamp

from deploykit.bench import environment
from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.models import build_model, count_macs_params, file_size_bytes, find_first_last
from deploykit.prune import prune_to_macs
from deploykit.quant import build_quantized
from deploykit.recipe import ModelSpec, PruneSpec, QuantizeSpec

OUT = Path(__file__).resolve().parent / "results" / "l18_schemes_and_chain.json"
SHAPE = (3, 224, 224)


def kernel_counts(path: Path) -> dict[str, int]:
    """Which kernels ONNX Runtime's CPU EP actually runs after its graph optimizations: integer
    ones (QLinearConv, QLinearAdd, ...) or float convolutions left between Q/DQ pairs."""
    import collections

    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    opts.log_severity_level = 3  # the "hardware specific" serialisation warning is expected
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(opts.optimized_model_filepath).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    keep = ("QLinearConv", "QLinearAdd", "QLinearMatMul", "QLinearGlobalAveragePool", "Conv",
            "FusedConv", "NchwcConv", "Gemm", "MatMul", "QuantizeLinear", "DequantizeLinear")
    return {k: ops[k] for k in keep if ops.get(k)}


def ort_quantize_static(float_onnx: Path, out: Path, calib: list[torch.Tensor]) -> Path:
    """The peer tool's INT8: ONNX Runtime ``quantize_static`` with the knobs that run fast on
    its CPU EP, first conv and classifier excluded (as deploykit's default policy)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(float_onnx), str(pre))
    graph = onnx.load(str(pre)).graph
    layers = [n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    name = graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{name: c.numpy()} for c in calib])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=[layers[0], layers[-1]])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--round-to", nargs="+", type=int, default=[8, 16],
                    help="one chain per channel multiple of the pruning")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    results = {"date": stamp(), "environment": environment(2), "rows": []}
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(8, *SHAPE, generator=g) for _ in range(2)]
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(ModelSpec(source="torchvision", name=name, num_classes=1000)).eval()
        fl = find_first_last(model, SHAPE)
        models = {"float": model}
        for label, target, keep in (("int8-ort-firstlast-float", "onnxruntime-cpu", list(fl)),
                                    ("int8-ort-all-int8", "onnxruntime-cpu", []),
                                    ("int8-trt-firstlast-float", "tensorrt", list(fl))):
            models[label] = build_quantized(model, QuantizeSpec(target=target), keep, calib)
        base_macs = count_macs_params(model, SHAPE)[0]
        paths = {}
        for label, m in models.items():
            log(f"{name}: exporting {label}")
            paths[label] = export_onnx(m, SHAPE, tmp / f"{name}-{label}.onnx")
        for rt in args.round_to:
            pruned, _, _ = prune_to_macs(model, SHAPE, PruneSpec(target={"macs_ratio": 0.5},
                                                                 round_to=rt),
                                         [fl[1]], base_macs // 2, 0.02 * base_macs)
            chain = build_quantized(pruned, QuantizeSpec(), list(fl), calib)
            for label, m in ((f"pruned-float-rt{rt}", pruned),
                             (f"chain-prune-rt{rt}-int8-firstlast-float", chain)):
                models[label] = m
                log(f"{name}: exporting {label}")
                paths[label] = export_onnx(m, SHAPE, tmp / f"{name}-{label}.onnx")
            label = f"peer-chain-rt{rt}-ort-quantize_static-firstlast-float"
            paths[label] = ort_quantize_static(paths[f"pruned-float-rt{rt}"],
                                               tmp / f"{name}-{label}.onnx", calib)
            models[label] = chain   # for MACs and params
        p50 = ort_latency(paths, SHAPE, batches=args.batches, iterations=args.iterations)
        for label, m in models.items():
            macs, params = count_macs_params(m, SHAPE)
            row = {"model": name, "candidate": label, "macs": macs, "params": params,
                   "onnx_bytes": file_size_bytes(paths[label]),
                   "ort_kernels": kernel_counts(paths[label]),
                   "p50_ms": {str(b): v for b, v in p50[label].items()},
                   "speedup": {str(b): p50["float"][b] / p50[label][b] for b in args.batches}}
            results["rows"].append(row)
            log(f"{name} {label}: " + ", ".join(f"b{b} {p50[label][b]:.2f} ms "
                                                f"({row['speedup'][str(b)]:.2f}x)"
                                                for b in args.batches))
        save_results(OUT, results)


if __name__ == "__main__":
    main()
