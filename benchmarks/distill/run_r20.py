"""R20 distillation benchmark: recovery variants after L1 pruning to ~0.5x and ~0.25x MACs.

Every variant starts from the same pruned weights and gets the same budget (5 epochs; plain and
the logit/feature losses: SGD nesterov lr 0.01 cosine; function matching: its own AdamW recipe),
through the distill stage itself. ``function_matching_long`` runs ``--long-epochs``.

Usage (from the repository root, with ../shared/data/cifar10 present):
    python benchmarks/distill/run_r20.py [--levels 0.25 0.5] [--variants plain kd ...] [--seed 0]

Appends each finished run to ``--out`` (default:
benchmarks/distill/results/r20_seeds_and_ensemble_at_0.25x.json) and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common

from deploykit.host.progress import log
from deploykit.models import count_macs_params
from deploykit.recipe import DistillSpec
from deploykit.train import seed_everything

OUT = Path(__file__).resolve().parent / "results" / "r20_seeds_and_ensemble_at_0.25x.json"
SHAPE = (3, 32, 32)
KD = {"ce": 0.1, "kd": 0.9}
VARIANTS: dict[str, dict] = {
    "plain": {"losses": {"ce": 1.0, "kd": 0.0}},
    "kd": {"losses": KD, "temperature": 4.0},
    "kd+hint": {"losses": {**KD, "hint": 1e-3}, "temperature": 4.0},
    "kd+attention": {"losses": {**KD, "attention": 500.0}, "temperature": 4.0},
    "overhaul": {"losses": {"ce": 1.0, "kd": 0.0, "overhaul": 1e-3},
                 "teacher": {"bn_train": True}},
    "function_matching": {"mode": "function_matching"},
    "function_matching_long": {"mode": "function_matching"},
    # Settings tried on a held-out split (--holdout) before any test-set run; "lr" overrides
    # the recovery schedule's learning rate, "sgd" gives function matching the SGD schedule.
    "plain@lr0.05": {"losses": {"ce": 1.0, "kd": 0.0}, "lr": 0.05},
    "kd+attention@lr0.05": {"losses": {**KD, "attention": 500.0}, "temperature": 4.0,
                            "lr": 0.05},
    "kd-only+attention": {"losses": {"ce": 0.0, "kd": 1.0, "attention": 500.0},
                          "temperature": 4.0},
    "function_matching@sgd": {"mode": "function_matching", "sgd": True},
    "kd+attention@T2": {"losses": {**KD, "attention": 500.0}, "temperature": 2.0},
    "kd+attention@T8": {"losses": {**KD, "attention": 500.0}, "temperature": 8.0},
    "kd+attention@ce0.5": {"losses": {"ce": 0.5, "kd": 0.5, "attention": 500.0},
                           "temperature": 4.0},
    # An ensemble teacher: the baseline and a second R20 baseline trained with seed 1 (the same
    # budget); their softened probabilities are averaged (feature losses need one teacher).
    "kd+ensemble": {"losses": KD, "temperature": 4.0, "ensemble": [0, 1]},
}


def spec_for(name: str, epochs: int, long_epochs: int) -> DistillSpec:
    raw = copy.deepcopy(VARIANTS[name])
    lr, sgd = raw.pop("lr", None), raw.pop("sgd", False)
    if "ensemble" in raw:
        raw["teacher"] = {"checkpoints": [common.r20_baseline_path(s) for s in raw.pop("ensemble")]}
    if raw.get("mode") == "function_matching" and not sgd:
        fm = DistillSpec(mode="function_matching").train
        raw["train"] = fm.model_copy(update={"epochs": long_epochs if name.endswith("long")
                                             else epochs})
    else:
        raw["train"] = common.RECOVERY_TRAIN.model_copy(update={"epochs": epochs})
    if lr is not None:
        raw["train"] = raw["train"].model_copy(update={"lr": lr})
    return DistillSpec(kind="distill", **raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if "long" not in v],
                    choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--long-epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=0,
                    help="seeds the data order, augmentation and training; the pruned student "
                         "is the same for every seed (L1 pruning is deterministic)")
    ap.add_argument("--holdout", type=int, default=0, metavar="N",
                    help="train on 50,000 - N training images and report top-1 on the other N "
                         "(a fixed seeded choice) instead of the test set: for choosing settings "
                         "without the test set")
    args = ap.parse_args()
    for seed in sorted({s for v in args.variants for s in VARIANTS[v].get("ensemble", [])}):
        if not common.r20_baseline_path(seed).is_file():   # train the extra teacher once, cached
            common.r20_baseline(common.cifar_loaders(seed), log, seed)
    loaders, base, results = common.r20_setup(args.out, log, args.seed)
    split = "test"
    if args.holdout:
        loaders, split = common.holdout_split(loaders, args.holdout), f"holdout{args.holdout}"
        results["baseline"]["holdout_top1_pct"] = common.top1(base, loaders)
    base_top1, base_macs = results["baseline"]["top1_pct"], results["baseline"]["macs"]
    for level in args.levels:
        seed_everything(0)
        pruned = common.prune_l1(base, level, base_macs)
        macs = count_macs_params(pruned, SHAPE)[0]
        pruned_top1 = common.top1(pruned, loaders)
        log(f"level {level}: {macs / base_macs:.3f}x MACs, top-1 {pruned_top1:.2f}% unrecovered")
        for name in args.variants:
            seed_everything(args.seed)
            dspec = spec_for(name, args.epochs, args.long_epochs)
            t0 = time.perf_counter()
            _, m = common.distill_recover(base, base_top1, copy.deepcopy(pruned), pruned_top1,
                                   loaders, dspec)
            row = {"level": level, "macs_ratio": macs / base_macs, "variant": name,
                   "seed": args.seed, "split": split,
                   "pruned_top1_pct": pruned_top1, "top1_pct": m["val_top1_pct"],
                   "best_top1_pct": m["best_val_top1_pct"], "epochs": m["epochs"],
                   "seconds_per_epoch": m["seconds_per_epoch"],
                   "seconds": time.perf_counter() - t0,
                   "optimizer": dspec.train.optimizer, "lr": dspec.train.lr,
                   "losses": dspec.losses.model_dump(), "temperature": dspec.temperature,
                   "history": m["history"]}
            results["rows"] = [r for r in results["rows"] if (r["level"], r["variant"],
                               r.get("seed", 0), r.get("split", "test"))
                               != (level, name, args.seed, split)] + [row]
            common.save_results(args.out, results)
            log(f"{level}x {name}: {row['top1_pct']:.2f}% ({row['seconds_per_epoch']:.0f} s/ep)")
    print(markdown(results))


def markdown(results: dict) -> str:
    """One row per run; "vs plain" compares with plain fine-tuning of the same level and seed."""
    base = results["baseline"]["top1_pct"]
    lines = [f"Teacher (float R20): {base:.2f}%", "",
             "| split | MACs | variant | seed | epochs | top-1 | vs plain | s/epoch "
             "| vs plain s/epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    key = lambda r: (r.get("split", "test"), r["level"], r.get("seed", 0))  # noqa: E731
    rows = sorted(results["rows"], key=lambda r: (*key(r), list(VARIANTS).index(r["variant"])))
    plain = {key(r): r for r in rows if r["variant"] == "plain"}
    for r in rows:
        p = plain.get(key(r))
        d = f"{r['top1_pct'] - p['top1_pct']:+.2f}" if p else "-"
        t = f"{r['seconds_per_epoch'] / p['seconds_per_epoch']:.2f}x" if p else "-"
        lines.append(f"| {r.get('split', 'test')} | {r['macs_ratio']:.2f}x | {r['variant']} | "
                     f"{r.get('seed', 0)} | "
                     f"{r['epochs']} | {r['top1_pct']:.2f}% | {d} | "
                     f"{r['seconds_per_epoch']:.0f} | {t} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
