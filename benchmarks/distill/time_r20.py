"""Seconds per training step of each distillation variant vs plain fine-tuning on R20.

The teacher's forward pass (and the feature taps and adapters) is the overhead of distilling.
Variants are timed alternately in one process (rounds of ``--steps`` steps each), so a slow
drift of the machine affects all of them alike. Uses the pruned 0.25x student and random
CIFAR-shaped batches of 128: the cost does not depend on the weights' values.

Usage: python benchmarks/distill/time_r20.py [--rounds 3] [--steps 20] [--level 0.25]
Writes benchmarks/distill/results/r20_step_time.json and prints a table.
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
from common import prune_l1, save_results, stamp
from run_r20 import VARIANTS, spec_for

from deploykit.bench.cost import count_macs_params
from deploykit.bench.env import environment
from deploykit.distill.objective import DistillObjective
from deploykit.distill.teacher import Teacher
from deploykit.models import build_model
from deploykit.recipe import ModelSpec
from deploykit.train import make_optimizer, seed_everything

OUT = Path(__file__).resolve().parent / "results" / "r20_step_time.json"
SHAPE = (3, 32, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--level", type=float, default=0.25)
    args = ap.parse_args()
    torch.set_num_threads(2)
    seed_everything(0)
    base = build_model(ModelSpec(name="resnet20"))
    macs = count_macs_params(base, SHAPE)[0]
    pruned = prune_l1(base, args.level, macs)
    x = torch.randn(128, *SHAPE)
    y = torch.randint(0, 10, (128,))
    names = [v for v in VARIANTS if "long" not in v]
    setups = {}
    for name in names:
        spec = spec_for(name, 5, 5)
        student = copy.deepcopy(pruned).train()
        obj = DistillObjective(student, Teacher([base], None, spec.teacher.bn_train), spec, x[:2])
        opt = make_optimizer(torch.nn.ModuleDict({"s": student, "a": obj}), spec.train)
        setups[name] = (student, obj, opt, spec.train.grad_clip)
    per_step: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name, (student, obj, opt, clip) in setups.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                terms = obj.loss(student, x, y)
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(student.parameters(), clip)
                opt.step()
            per_step[name].append((time.perf_counter() - t0) / args.steps)
    plain = statistics.median(per_step["plain"])
    rows = [{"variant": n, "seconds_per_step": statistics.median(v),
             "vs_plain": statistics.median(v) / plain, "rounds": v} for n, v in per_step.items()]
    save_results(OUT, {"date": stamp(), "environment": environment(2),
                       "level": args.level, "batch": 128, "steps_per_round": args.steps,
                       "rows": rows})
    print("| variant | s/step (batch 128) | s/epoch (390 steps) | vs plain |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['seconds_per_step']:.3f} | "
              f"{390 * r['seconds_per_step']:.0f} | {r['vs_plain']:.2f}x |")


if __name__ == "__main__":
    main()
