"""INT8 that pays on the MobileNetV3 family: the ways, timed on both CPU runtimes.

torchvision mobilenet_v3_large / mobilenet_v3_small at 224x224, random weights (latency only;
calibration on random images). Per model, each way as a float file and its INT8 file (first
and last layer float), every file on ONNX Runtime CPU and OpenVINO CPU, all pairs timed
alternately in one process:

- ``as is``: HardSwish / HardSigmoid kept (INT8 for the runtime's own target);
- ``depthwise float``: the same with every depthwise convolution kept float
  (``quantize.keep_float: [first, last, depthwise]``);
- ``relu6``: HardSwish replaced by ReLU6 and HardSigmoid written as relu6(x + 3) / 6
  (``deploykit.models.activations.replace_hard_activations``); a different function, whose
  accuracy needs recovery training: not measured here.

The question per runtime: is the INT8 file faster than its own float twin (and than the
original float model), and by how much.

Usage: python benchmarks/quantize/mbv3_int8_ways.py [--models mobilenet_v3_large
       mobilenet_v3_small] [--batches 1 16] [--iterations 40]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import save_results, stamp, time_runner_pairs

from deploykit.bench import environment
from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.models import build_model, find_first_last
from deploykit.models.activations import replace_hard_activations
from deploykit.quant import build_quantized
from deploykit.quant.prepare import resolve_keep_float
from deploykit.recipe import ModelSpec, QuantizeSpec
from deploykit.runtimes import make_runner

OUT = Path(__file__).resolve().parent / "results" / "mbv3_int8_ways.json"
SHAPE = (3, 224, 224)
TARGET = {"onnxruntime-cpu": "onnxruntime-cpu", "openvino-cpu": "openvino"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mobilenet_v3_large", "mobilenet_v3_small"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(8, *SHAPE, generator=g) for _ in range(2)]
    results = {"task": "MobileNetV3 INT8 ways on two CPU runtimes", "date": stamp(),
               "environment": environment(2), "rows": []}
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(ModelSpec(source="torchvision", name=name, num_classes=1000)).eval()
        relu6 = copy.deepcopy(model)
        swapped = replace_hard_activations(relu6)
        first, last = find_first_last(model, SHAPE)
        files: dict[tuple[str, str, str], Path] = {}   # (way, precision, target) -> file
        depthwise = resolve_keep_float(model, ["depthwise"], (first, last))
        for way, float_model, keep in (("as is", model, [first, last]),
                                       ("depthwise float", model, [first, last, *depthwise]),
                                       ("relu6", relu6, [first, last])):
            if way != "depthwise float":
                files[(way, "fp32", "")] = export_onnx(float_model, SHAPE,
                                                       tmp / f"{name}-{way}-float.onnx")
            for rt, target in TARGET.items():
                q = build_quantized(float_model, QuantizeSpec(target=target), keep, calib)
                log(f"{name}: exporting {way} INT8 for {target}")
                files[(way, "int8", rt)] = export_onnx(q, SHAPE,
                                                       tmp / f"{name}-{way}-int8-{target}.onnx")
        runners = {}
        for (way, prec, for_rt), path in files.items():
            for rt in TARGET:
                if prec == "int8" and for_rt != rt:
                    continue   # each runtime runs the INT8 file made for it
                runners[(way, prec, rt)] = make_runner(rt, onnx_path=path, precision=prec)
        timed = time_runner_pairs(runners, SHAPE, args.batches, args.iterations,
                                  what=f"{name}: ")
        p50 = {k: {b: st.p50_ms for b, st in by_batch.items()} for k, by_batch in timed.items()}
        for (way, prec, rt), ms in p50.items():
            twin = ("relu6" if way == "relu6" else "as is", "fp32", rt)
            row = {"model": name, "way": way, "precision": prec, "runtime": rt,
                   "activations_replaced": len(swapped) if way == "relu6" else 0,
                   "p50_ms": {str(b): v for b, v in ms.items()},
                   "speedup_vs_float_twin": {str(b): p50[twin][b] / v for b, v in ms.items()},
                   "speedup_vs_original_float_on_ort": {
                       str(b): p50[("as is", "fp32", "onnxruntime-cpu")][b] / v
                       for b, v in ms.items()}}
            results["rows"].append(row)
            log(f"{name} {way} {prec} on {rt}: " + ", ".join(
                f"b{b} {v:.2f} ms ({row['speedup_vs_float_twin'][str(b)]:.2f}x its float twin)"
                for b, v in ms.items()))
        save_results(args.out, results)


if __name__ == "__main__":
    main()
