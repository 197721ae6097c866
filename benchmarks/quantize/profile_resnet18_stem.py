"""Per-kernel ONNX Runtime profile of resnet18's stem (224x224, random weights), INT8 for
onnxruntime-cpu with every layer INT8 vs first/last float, at batch 1 and 16, 2 threads.

Prints each model's kernel time per run by op type and the first kernels of one run (the stem
conv, the max-pool and what ONNX Runtime put between them): where the all-INT8 model loses
the time it saves in the stem.

Usage: python benchmarks/quantize/profile_resnet18_stem.py [--runs 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from profile_mbv2 import SHAPE, l18_model, ms_per_run, print_ops, profile

from deploykit.export import export_onnx
from deploykit.models import find_first_last
from deploykit.quant import build_quantized
from deploykit.recipe import QuantizeSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args()
    model, calib = l18_model("resnet18")
    tmp = Path(tempfile.mkdtemp())
    first_last = list(find_first_last(model, SHAPE))
    for label, keep in (("all INT8", []), ("first/last float", first_last)):
        path = export_onnx(build_quantized(model, QuantizeSpec(), keep, calib), SHAPE,
                           tmp / f"{len(keep)}.onnx")
        for b in args.batches:
            events = profile(path, tmp / f"{len(keep)}-{b}", args.runs, warmup=5, batch=b)
            by_op = ms_per_run(events, args.runs)
            print(f"{label}, batch {b}: {sum(by_op.values()):.2f} ms of kernels per run")
            print_ops(by_op, 6)
            first = sorted(events, key=lambda e: e["ts"])[:6]
            print("  first kernels: " + ", ".join(
                f"{e['args']['op_name']} {e['dur'] / 1e3:.2f}" for e in first))


if __name__ == "__main__":
    main()
