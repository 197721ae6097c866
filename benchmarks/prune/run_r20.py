"""R20 pruning benchmark: l1, bn_scale (+ sparsity training), group_norm at ~0.5x MACs.

Usage (from the repository root, with ../shared/data/cifar10 present):
    python benchmarks/prune/run_r20.py [--criteria l1 bn_scale group_norm] [--recovery-epochs 5]

Writes benchmarks/prune/results/r20_criteria_recovery.json after each criterion and prints a
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
from common import RECOVERY_TRAIN, ort_latency, r20_setup, save_results, stamp, top1

from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.models import count_macs_params
from deploykit.prune import prune_to_macs
from deploykit.recipe import PruneSpec
from deploykit.train import fit, seed_everything

OUT = Path(__file__).resolve().parent / "results" / "r20_criteria_recovery.json"
SHAPE = (3, 32, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--criteria", nargs="+", default=["l1", "bn_scale", "group_norm"])
    ap.add_argument("--macs-ratio", type=float, default=0.5)
    ap.add_argument("--recovery-epochs", type=int, default=5)
    ap.add_argument("--sparsity-epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT,
                    help="results JSON (rewritten with only the criteria run now)")
    ap.add_argument("--latency-only", action="store_true",
                    help="no data, no training: random weights, MACs and latency only")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.latency_only:
        return latency_only(args)
    loaders, base, results = r20_setup(args.out, log)
    results["rows"] = []   # rewritten with only the criteria run now
    base_macs = results["baseline"]["macs"]
    recovery = RECOVERY_TRAIN.model_copy(update={"epochs": args.recovery_epochs})
    tmp = Path(tempfile.mkdtemp())
    export_onnx(base, SHAPE, tmp / "baseline.onnx")
    for crit in args.criteria:
        seed_everything(0)
        t0 = time.perf_counter()
        model = copy.deepcopy(base)
        spec_d = {"importance": crit, "target": {"macs_ratio": args.macs_ratio}, "round_to": 8}
        row = {"criterion": crit}
        if crit in ("bn_scale", "group_norm"):
            from deploykit.prune import make_pruner
            from deploykit.recipe import TrainSpec

            reg = 1e-4 if crit == "bn_scale" else 5e-4
            pruner = make_pruner(model, torch.zeros(1, *SHAPE), PruneSpec(**spec_d),
                                  [model.fc], 0.0, reg=reg)
            res = fit(model, loaders.train, loaders.val,
                      TrainSpec(epochs=args.sparsity_epochs, lr=0.01, schedule="cosine"),
                      desc=f"{crit} sparsity", after_backward=pruner.regularize)
            row.update(sparsity_epochs=args.sparsity_epochs, sparsity_lambda=reg,
                       after_sparsity_top1_pct=res.final,
                       sparsity_seconds=res.seconds)
        spec = PruneSpec(**spec_d)
        pruned, _, _ = prune_to_macs(model, SHAPE, spec, ["fc"], int(base_macs * args.macs_ratio),
                                     0.02 * base_macs)
        macs, params = count_macs_params(pruned, SHAPE)
        row.update(macs=macs, macs_ratio=macs / base_macs, params=params,
                   pruned_top1_pct=top1(pruned, loaders))
        res = fit(pruned, loaders.train, loaders.val, recovery, desc=f"{crit} recovery")
        row.update(recovered_top1_pct=res.final, recovery_epochs=recovery.epochs,
                   recovery_seconds=res.seconds)
        path = export_onnx(pruned, SHAPE, tmp / f"{crit}.onnx")
        from deploykit.bench import runner_accuracy
        from deploykit.runtimes import OrtRunner

        row["ort_top1_pct"] = runner_accuracy(OrtRunner(path), loaders.val)["top1_pct"]
        lat = ort_latency({"base": tmp / "baseline.onnx", "cand": path}, SHAPE)
        row.update(base_ms={str(b): v for b, v in lat["base"].items()},
                   cand_ms={str(b): v for b, v in lat["cand"].items()},
                   speedup={str(b): lat["base"][b] / lat["cand"][b] for b in lat["base"]},
                   seconds=time.perf_counter() - t0)
        results["rows"].append(row)
        save_results(args.out, results)
        log(f"{crit}: {row}")
    print(markdown(results))


def latency_only(args: argparse.Namespace) -> None:
    from common import ROOT

    from deploykit.models import build_model
    from deploykit.recipe import ModelSpec

    seed_everything(0)
    base = build_model(ModelSpec(name="resnet20")).eval()
    base_macs = count_macs_params(base, SHAPE)[0]
    tmp = Path(tempfile.mkdtemp())
    paths = {"float": export_onnx(base, SHAPE, tmp / "float.onnx")}
    macs = {"float": base_macs}
    for crit in args.criteria:
        for round_to in (8, None):
            spec = PruneSpec(importance=crit, target={"macs_ratio": args.macs_ratio},
                             round_to=round_to)
            grads = [(torch.randn(32, *SHAPE), torch.randint(0, 10, (32,)))]
            pruned, _, _ = prune_to_macs(base, SHAPE, spec, ["fc"],
                                         int(base_macs * args.macs_ratio), 0.02 * base_macs,
                                         grads)
            key = f"{crit}, round_to {round_to}"
            paths[key] = export_onnx(pruned, SHAPE, tmp / f"{crit}-{round_to}.onnx")
            macs[key] = count_macs_params(pruned, SHAPE)[0]
    lat = ort_latency(paths, SHAPE, batches=(1, 64), iterations=60)
    rows = [{"candidate": k, "macs_ratio": macs[k] / base_macs,
             "speedup": {str(b): lat["float"][b] / lat[k][b] for b in lat["float"]},
             "p50_ms": {str(b): v for b, v in lat[k].items()}} for k in paths]
    save_results(ROOT / "prune" / "results" / "r20_round_to_latency.json",
                 {"date": stamp(), "machine": "2-core x86_64 CPU (project machine)",
                  "rows": rows})
    print("| candidate | MACs ratio | ORT p50 b1 / b64 (ms) | speed-up b1 / b64 |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['candidate']} | {r['macs_ratio']:.2f}x | {r['p50_ms']['1']:.3f} / "
              f"{r['p50_ms']['64']:.2f} | {r['speedup']['1']:.2f}x / {r['speedup']['64']:.2f}x |")


def markdown(r: dict) -> str:
    b = r["baseline"]
    lines = ["| criterion | MACs (ratio) | params | top-1 after prune | top-1 after recovery "
             "(ORT) | Δ pts | ORT b1 speed-up | ORT b64 speed-up |",
             "|---|---|---|---:|---:|---:|---:|---:|",
             f"| float baseline | {b['macs'] / 1e6:.1f} M (1.00x) | {b['params'] / 1e6:.3f} M | - "
             f"| {b['top1_pct']:.2f}% | - | 1.00x | 1.00x |"]
    for row in r["rows"]:
        crit = row["criterion"] + (f" + {row['sparsity_epochs']} ep sparsity"
                                   if "sparsity_epochs" in row else "")
        lines.append(
            f"| {crit} | {row['macs'] / 1e6:.1f} M ({row['macs_ratio']:.2f}x) | "
            f"{row['params'] / 1e6:.3f} M | {row['pruned_top1_pct']:.2f}% | "
            f"{row['ort_top1_pct']:.2f}% | {row['ort_top1_pct'] - b['top1_pct']:+.2f} | "
            f"{row['speedup']['1']:.2f}x | {row['speedup']['64']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
