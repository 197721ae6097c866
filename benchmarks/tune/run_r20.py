"""Benchmark task Tune R20: `deploykit tune` on CIFAR-10 ResNet-20 (the cached 15-epoch
baseline, the protocol's 5-epoch KD recovery, PTQ, ONNX Runtime CPU), with a fixed trial
budget, next to the hand-written chain recipe measured as the study's first trial (enqueued:
the same baseline, the same machinery, the same run).

The study optimises accuracy drop and latency over the baseline at batch 1; every trial's run
also times batch 64, so the front is read at both batch sizes from the trials' reports.

    python benchmarks/tune/run_r20.py --trials 8 --out benchmarks/tune/results/r20_tune.json

Needs ../shared/data/cifar10 and the tune extra. The study and its trial folders go to
benchmarks/results/cache/r20-tune/ (git-ignored): rerunning continues the study.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import CACHE, CIFAR, cifar_loaders, r20_baseline, r20_baseline_path

from deploykit.bench import environment
from deploykit.host.progress import log
from deploykit.report import Report
from deploykit.runfiles.atomic import write_text

ROOT = Path(__file__).resolve().parents[2]
HAND_WRITTEN = {"prune.target.macs_ratio": 0.7, "prune.importance": "l1", "prune.round_to": 16,
                "prune.global": True, "quantize.keep_float": [], "quantize.keep_sensitive": 0}
PEER_B64 = (1.43, -1.33)   # ../shared/BENCHMARKS.md: the tuned peer, speed-up and top-1 change


def _front(points: list[dict], key: str) -> list[int]:
    """Trial numbers not dominated on (accuracy drop, latency ratio at ``key``)."""
    out = []
    for p in points:
        if not any(q is not p and q["accuracy_drop"] <= p["accuracy_drop"]
                   and q[key] <= p[key] and (q["accuracy_drop"], q[key])
                   != (p["accuracy_drop"], p[key]) for q in points):
            out.append(p["number"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/tune/results/r20_tune.json")
    ap.add_argument("--study", default="r20-tune")
    ap.add_argument("--startup-trials", type=int, default=None,
                    help="TPE's random start-up trials (default: the recipe's)")
    args = ap.parse_args()
    import optuna

    t0 = time.time()
    loaders = cifar_loaders(0)
    _, meta = r20_baseline(loaders, log)
    recipe = yaml.safe_load((ROOT / "recipes/cifar10-resnet20-tune.yaml").read_text())
    recipe["model"]["checkpoint"] = str(r20_baseline_path(0))
    recipe["data"]["root"] = str(CIFAR)
    recipe["data"]["calib_samples"] = 1024
    if args.startup_trials is not None:
        recipe["tune"]["startup_trials"] = args.startup_trials
    work = CACHE / "r20-tune"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    storage = f"sqlite:///{work / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name=args.study, load_if_exists=True,
                                directions=["minimize", "minimize"])
    if not study.trials:   # the hand-written chain, measured as trial 0
        enq = {k: v for k, v in HAND_WRITTEN.items() if k != "quantize.keep_float"}
        enq["quantize.keep_float#"] = 0
        study.enqueue_trial(enq)
    from deploykit.tune import tune

    code = tune(path, args.trials, storage, args.study, work)
    summary = json.loads((work / "tune.json").read_text())
    rows = []
    for r in summary["trials"]:
        if r["state"] != "complete" or r.get("duplicate_of") is not None:
            continue
        rep = Report.load(Path(r["trial_dir"]) / "report.json")
        base, last = rep.candidates[0], rep.candidates[-1]
        row = {"number": r["number"], "params": r["params"],
               "hand_written": r["params"] == HAND_WRITTEN,
               "accuracy_drop": r["accuracy_drop"], "top1_pct": r["accuracy"],
               "macs_ratio": r["macs_ratio"], "size_mb": r["size_mb"],
               "feasible": r["feasible"], "int8_not_faster": r["int8_not_faster"]}
        for b in (1, 64):
            row[f"latency_ratio_b{b}"] = (last.latency_at("onnxruntime-cpu", b).p50_ms
                                          / base.latency_at("onnxruntime-cpu", b).p50_ms)
        rows.append(row)
    feasible = [r for r in rows if r["feasible"]]
    for b in (1, 64):
        front = set(_front(feasible, f"latency_ratio_b{b}"))
        for r in rows:
            r[f"front_b{b}"] = r["number"] in front
    hand = next((r for r in rows if r["hand_written"]), None)
    dominating = [] if hand is None else [
        r["number"] for r in feasible if not r["hand_written"]
        and r["latency_ratio_b1"] < hand["latency_ratio_b1"]
        and r["accuracy_drop"] <= hand["accuracy_drop"]]
    two_x = [r["number"] for r in feasible
             if 1 / r["latency_ratio_b64"] >= 2.0 and r["accuracy_drop"] <= 1.0]
    result = {"task": "Tune R20", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": platform.processor() or platform.machine(),
              "environment": environment(2), "baseline": meta, "trials_requested": args.trials,
              "wall_seconds": round(time.time() - t0, 1), "exit_code": code,
              "rows": rows, "hand_written": None if hand is None else hand["number"],
              "dominating_hand_written_b1": dominating, "two_x_b64_within_1pt": two_x,
              "peer_b64": {"speedup": PEER_B64[0], "top1_change": PEER_B64[1]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2, default=str))
    print("| trial | settings | top-1 | Δ pts | MACs | speed-up b1 | speed-up b64 | front |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        p = r["params"]
        tag = "hand-written chain" if r["hand_written"] else (
            f"{p['prune.importance']} {p['prune.target.macs_ratio']:.2f}x r{p['prune.round_to']}"
            f" {'global' if p['prune.global'] else 'layer'} float={p['quantize.keep_float']}"
            f"+{p['quantize.keep_sensitive']}")
        fronts = [f"b{b}" for b in (1, 64) if r[f"front_b{b}"]]
        print(f"| {r['number']} | {tag} | {r['top1_pct']:.2f} | {-r['accuracy_drop']:+.2f} | "
              f"{r['macs_ratio']:.2f}x | {1 / r['latency_ratio_b1']:.2f}x | "
              f"{1 / r['latency_ratio_b64']:.2f}x | {', '.join(fronts) or '-'}"
              + ("" if r["feasible"] else " (infeasible)") + " |")
    print(f"dominating the hand-written chain at b1: {dominating}; >= 2x at <= 1 pt (b64): "
          f"{two_x}; wall {result['wall_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
