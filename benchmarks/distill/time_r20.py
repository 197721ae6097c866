"""Seconds per training step of each distillation variant vs plain fine-tuning on R20.

The teacher's forward pass (and the feature taps and adapters) is the overhead of distilling.
Variants are timed alternately in one process (rounds of ``--steps`` steps each), so a slow
drift of the machine affects all of them alike; every step goes through the stage's own loop
(``train_one_epoch``: progress bar, loss-term averages, clipping that covers the adapters).
Uses the pruned 0.25x student, random weights and random CIFAR-shaped batches of 128.

``--epochs``: time whole training epochs on the real CIFAR-10 loader instead (data loading
included, evaluation excluded), still alternating, with the trained R20 baseline as the teacher
and the source of the pruned student; this is what the issue's per-epoch target counts. Needs
../shared/data/cifar10.

Usage: python benchmarks/distill/time_r20.py [--rounds 3] [--steps 20] [--level 0.25]
       python benchmarks/distill/time_r20.py --epochs --rounds 2 --variants plain kd
Writes benchmarks/distill/results/r20_kd_overhead_per_step.json
(r20_kd_overhead_per_epoch.json with --epochs) and
prints a table.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import cifar_loaders, prune_l1, r20_baseline, save_results, stamp
from run_r20 import VARIANTS, spec_for

from deploykit.bench import environment
from deploykit.distill import DistillObjective, Teacher
from deploykit.host.progress import log
from deploykit.models import build_model, count_macs_params
from deploykit.recipe import ModelSpec
from deploykit.train import make_optimizer, seed_everything, train_one_epoch

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE = (3, 32, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--level", type=float, default=0.25)
    ap.add_argument("--epochs", action="store_true",
                    help="time whole epochs of the real training loader (ignores --steps)")
    timeable = [v for v in VARIANTS if "long" not in v and "ensemble" not in VARIANTS[v]]
    ap.add_argument("--variants", nargs="+", default=[v for v in timeable if "@" not in v],
                    choices=timeable)
    args = ap.parse_args()
    if "plain" not in args.variants:
        ap.error("--variants must include plain (the ratios are against it)")
    torch.set_num_threads(2)
    seed_everything(0)
    if args.epochs:   # the trained baseline (cached or trained): weights can change the cost
        loaders = cifar_loaders()
        train, base = loaders.train, r20_baseline(loaders, log)[0]
    else:
        train, base = None, build_model(ModelSpec(name="resnet20"))
    macs = count_macs_params(base, SHAPE)[0]
    pruned = prune_l1(base, args.level, macs)
    x = torch.randn(128, *SHAPE)
    y = torch.randint(0, 10, (128,))
    names = args.variants
    setups = {}
    for name in names:
        spec = spec_for(name, 5, 5)
        student = copy.deepcopy(pruned).train()
        obj = DistillObjective(student, Teacher([base], None, spec.teacher.bn_train), spec, x[:2])
        trainable = torch.nn.ModuleDict({"s": student, "a": obj})
        setups[name] = (student, obj, trainable, make_optimizer(trainable, spec.train),
                        spec.train.grad_clip)
    per_step: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name, (student, obj, trainable, opt, clip) in setups.items():
            batches = train if args.epochs else [(x, y)] * args.steps
            t0 = time.perf_counter()
            train_one_epoch(student, batches, opt, None, obj.loss, name, clip,
                            trainable=trainable)
            seconds, n = time.perf_counter() - t0, len(batches)
            if args.epochs:
                log(f"{name}: {seconds:.1f} s/epoch ({n} steps)")
            per_step[name].append(seconds / n)
    plain = statistics.median(per_step["plain"])
    rows = [{"variant": n, "seconds_per_step": statistics.median(v),
             "vs_plain": statistics.median(v) / plain, "rounds": v} for n, v in per_step.items()]
    out = RESULTS / ("r20_kd_overhead_per_epoch.json" if args.epochs
                     else "r20_kd_overhead_per_step.json")
    save_results(out, {"date": stamp(), "environment": environment(2),
                       "level": args.level, "batch": 128, "data": "cifar10 loader" if args.epochs
                       else "random tensors", "steps_per_round": n, "rows": rows})
    steps = n if args.epochs else 390   # a CIFAR-10 epoch at batch 128
    print(f"| variant | s/step (batch 128) | s/epoch ({steps} steps) | vs plain |\n"
          "|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['seconds_per_step']:.3f} | "
              f"{steps * r['seconds_per_step']:.0f} | {r['vs_plain']:.2f}x |")


if __name__ == "__main__":
    main()
