"""R20 low-rank benchmark: Tucker-2 and SVD at ~0.5x MACs next to L1 channel pruning.

Each compressed model is measured right after compression and after the same 5-epoch
distillation recovery (Hinton KD 0.9 soft / 0.1 hard, T=4, SGD nesterov lr 0.01 cosine, through
the distill stage), then exported to ONNX and timed in ONNX Runtime CPU (2 threads, batch 1 and
64) alternately with the float baseline.

Usage (from the repository root, with ../shared/data/cifar10 present):
    python benchmarks/lowrank/run_r20.py [--methods tucker2 svd prune] [--macs-ratio 0.5]

Writes benchmarks/lowrank/results/r20_lowrank_vs_pruning.json after each method and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common

from deploykit.bench import runner_accuracy
from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.lowrank import factorise
from deploykit.models import count_macs_params
from deploykit.recipe import DistillSpec, LowRankSpec
from deploykit.runtimes import OrtRunner
from deploykit.train import seed_everything

OUT = Path(__file__).resolve().parent / "results" / "r20_lowrank_vs_pruning.json"
SHAPE = (3, 32, 32)


def compress(method: str, base: torch.nn.Module, ratio: float, base_macs: int):
    model = copy.deepcopy(base)
    if method == "prune":
        return common.prune_l1(base, ratio, base_macs), {}
    plans = factorise(model, LowRankSpec(method=method, target={"macs_ratio": ratio}), SHAPE,
                      ("conv1", "fc"))
    done = [p for p in plans if p.status == "factorised"]
    return model, {"layers": [p.to_dict() for p in plans],
                   "mean_rel_error": sum(p.rel_error for p in done) / max(len(done), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["tucker2", "svd", "prune"],
                    choices=["tucker2", "svd", "prune"])
    ap.add_argument("--macs-ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    loaders, base, results = common.r20_setup(args.out, log)
    base_top1, base_macs = results["baseline"]["top1_pct"], results["baseline"]["macs"]
    tmp = Path(tempfile.mkdtemp())
    base_onnx = export_onnx(base, SHAPE, tmp / "baseline.onnx")
    kd = DistillSpec(losses={"ce": 0.1, "kd": 0.9}, temperature=4.0,
                     train=common.RECOVERY_TRAIN.model_copy(update={"epochs": args.epochs}))
    for method in args.methods:
        seed_everything(0)
        t0 = time.perf_counter()
        model, extra = compress(method, base, args.macs_ratio, base_macs)
        macs, params = count_macs_params(model, SHAPE)
        row = {"method": method, "macs": macs, "macs_ratio": macs / base_macs, "params": params,
               "compressed_top1_pct": common.top1(model, loaders), **extra}
        recovered, m = common.distill_recover(base, base_top1, model, row["compressed_top1_pct"],
                                       loaders, kd, "lowrank")
        path = export_onnx(recovered, SHAPE, tmp / f"{method}.onnx")
        lat = common.ort_latency({"base": base_onnx, "cand": path}, SHAPE)
        row.update(recovered_top1_pct=m["val_top1_pct"], recovery_epochs=m["epochs"],
                   seconds_per_epoch=m["seconds_per_epoch"],
                   ort_top1_pct=runner_accuracy(OrtRunner(path), loaders.val)["top1_pct"],
                   base_ms={str(b): v for b, v in lat["base"].items()},
                   cand_ms={str(b): v for b, v in lat["cand"].items()},
                   speedup={str(b): lat["base"][b] / lat["cand"][b] for b in lat["base"]},
                   seconds=time.perf_counter() - t0)
        results["rows"] = [r for r in results["rows"] if r["method"] != method] + [row]
        common.save_results(args.out, results)
        log(f"{method}: {row['compressed_top1_pct']:.2f}% -> {row['recovered_top1_pct']:.2f}%, "
            f"{row['macs_ratio']:.3f}x MACs, speed-up {row['speedup']}")
    print(markdown(results))


def markdown(results: dict) -> str:
    b = results["baseline"]
    lines = [f"Float R20: {b['top1_pct']:.2f}%, {b['macs'] / 1e6:.1f} M MACs", "",
             "| method | MACs | top-1 compressed | top-1 after KD recovery | vs float | "
             "ORT speed-up b1 / b64 |", "|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['method']} | {r['macs_ratio']:.2f}x | {r['compressed_top1_pct']:.2f}% "
                     f"| {r['recovered_top1_pct']:.2f}% | "
                     f"{r['recovered_top1_pct'] - b['top1_pct']:+.2f} | "
                     f"{r['speedup']['1']:.2f}x / {r['speedup']['64']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
