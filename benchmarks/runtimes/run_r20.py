"""CPU runtimes for the R20 candidates: PyTorch eager and ONNX Runtime, with timing statistics.

Candidates (CIFAR ResNet-20 at 32x32, random weights: latency does not depend on the values):
the float model, the model L1-pruned to about 0.5x MACs with channel counts rounded to 8 and
to 16, and each quantized to INT8 for ONNX Runtime's CPU EP (first/last float). Each runtime's
candidates are timed alternately in one process with deploykit's stopping rule (95% interval
of the median within +-2%, at most 400 runs, 20 s per batch size) and reported with
p50/p90/p99, the interval, runs and stop reason.
The INT8 models have no PyTorch row: PyTorch only simulates them (fake-quant).

Usage: python benchmarks/runtimes/run_r20.py [--batches 1 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import prune_l1, save_results, stamp

from deploykit.bench import environment, time_alternating
from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.models import count_macs_params
from deploykit.models.cifar_resnet import resnet20
from deploykit.quant import build_quantized
from deploykit.recipe import QuantizeSpec
from deploykit.runtimes import OrtRunner, TorchRunner

OUT = Path(__file__).resolve().parent / "results" / "r20_runtimes.json"
SHAPE = (3, 32, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--target-ci", type=float, default=0.02)
    ap.add_argument("--max-iterations", type=int, default=400)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per runtime and batch")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    base = resnet20().eval()
    base_macs = count_macs_params(base, SHAPE)[0]
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(32, *SHAPE, generator=g) for _ in range(4)]
    spec = QuantizeSpec(target="onnxruntime-cpu")
    models = {"float": base}
    for r in (8, 16):
        models[f"pruned 0.5x round_to {r}"] = prune_l1(base, 0.5, base_macs, r).eval()
    models["float + INT8"] = build_quantized(base, spec, ["conv1", "fc"], calib)
    for r in (8, 16):
        models[f"pruned 0.5x round_to {r} + INT8"] = build_quantized(
            models[f"pruned 0.5x round_to {r}"], spec, ["conv1", "fc"], calib)
    paths = {k: export_onnx(m, SHAPE, tmp / f"{i}.onnx") for i, (k, m) in
             enumerate(models.items())}
    runners = {"torch-cpu": {k: TorchRunner(m, threads=2) for k, m in models.items()
                             if "INT8" not in k},
               "onnxruntime-cpu": {k: OrtRunner(p, threads=2) for k, p in paths.items()}}
    res = {"date": stamp(), "environment": environment(2), "target_rel_ci": args.target_ci,
           "max_iterations": args.max_iterations, "budget_s": args.budget, "rows": []}
    rng = np.random.default_rng(0)
    for b in args.batches:
        x = rng.standard_normal((b, *SHAPE), dtype=np.float32)
        for rt, group in runners.items():
            st = time_alternating({k: (lambda r=r, x=x: r(x)) for k, r in group.items()}, b,
                                  iterations=40, warmup=10, rounds=4,
                                  target_rel_ci=args.target_ci,
                                  max_iterations=args.max_iterations, budget_s=args.budget)
            for k, s in st.items():
                row = {"runtime": rt, "candidate": k, "macs": count_macs_params(
                    models[k].float_equivalent() if hasattr(models[k], "float_equivalent")
                    else models[k], SHAPE)[0], **s.to_dict(),
                    "speedup_vs_float": st["float"].p50_ms / s.p50_ms}
                res["rows"].append(row)
                log(f"b{b} {rt:16s} {k:20s} p50 {s.p50_ms:7.3f} ms "
                    f"[{s.p50_ci_low_ms:.3f}, {s.p50_ci_high_ms:.3f}] p99 {s.p99_ms:7.3f} "
                    f"runs {s.iterations} ({s.stop_reason}) {row['speedup_vs_float']:.2f}x")
    save_results(OUT, res)


if __name__ == "__main__":
    main()
