"""Zoo sweep: the whole chain on every torchvision classification model (and a timm selection).

Each model runs as a new user would run it, through ``deploykit.run`` in its own process:
random weights, synthetic data at the smallest input the model accepts (torchvision's
``min_size``, at least 32x32, raised until its training forward runs), a one-epoch baseline
(lr 0.002, gradients clipped at 1), ``prune`` to ``macs_ratio: 0.5`` (l1,
``round_to: 8``), PTQ INT8 for onnxruntime-cpu (with its speed check at batch 1), export,
parity, ONNX Runtime CPU latency at batch 1. Each process has a time limit and a memory limit
(its resident memory is polled and it is killed past the limit): a model that exceeds either
is recorded as such, never left to the kernel's out-of-memory killer.

Usage (from the repository root):
    python benchmarks/zoo/run_zoo.py [--models resnet18 ...] [--timm] [--timeout 420]
        [--max-memory-gb 10] [--out benchmarks/zoo/results/zoo.json]
    python benchmarks/zoo/run_zoo.py --table     # print the README table from the JSON

Rows are written to the JSON as each model finishes, so an interrupted sweep keeps them; a
rerun skips models already in the file unless ``--redo``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "zoo.json"
# timm families: CNNs, mobile nets, a ViT / DeiT, hybrids (the first name of each is swept)
TIMM = ["resnet18", "efficientnet_b0", "mobilenetv3_small_100", "ghostnet_100",
        "regnetx_002", "densenet121", "convnext_atto", "mixnet_s", "rexnet_100",
        "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "levit_128s",
        "mobilevit_xxs", "efficientformer_l1", "repvgg_a0", "dla34"]


def torchvision_models() -> list[tuple[str, str, int, int]]:
    """(source, name, input size, parameter count) in order of size."""
    import torchvision

    rows = []
    for name in torchvision.models.list_models(module=torchvision.models):
        weights = list(torchvision.models.get_model_weights(name))
        # the smallest over all weights: vit_h_14's default (SWAG, 518) is not what
        # get_model(name) builds (224)
        size = min(max(32, *w.meta.get("min_size", (32, 32))) for w in weights)
        rows.append(("torchvision", name, size, int(weights[0].meta.get("num_params", 0))))
    return sorted(rows, key=lambda r: r[3])


def timm_models() -> list[tuple[str, str, int, int]]:
    import timm

    rows = []
    for name in TIMM:
        cfg = timm.get_pretrained_cfg(name)
        size = 224 if cfg is None else cfg.input_size[-1]
        fixed = cfg is not None and getattr(cfg, "fixed_input_size", False)
        rows.append(("timm", name, size if fixed else 32 if size <= 224 else size, 0))
    return rows


MEMORY_GB = 9.5   # the recipe's limit, below the sweep's own kill limit (10 GiB by default)


def recipe_for(source: str, name: str, size: int) -> dict:
    return {
        "name": f"zoo-{name}", "seed": 0,
        "model": {"source": source, "name": name, "num_classes": 10},
        "data": {"kind": "synthetic", "image_size": size, "batch_size": 8,
                 "eval_batch_size": 16, "synthetic_samples": 32, "calib_samples": 16},
        "train": {"epochs": 1, "lr": 0.002, "schedule": "constant", "grad_clip": 1.0},
        "stages": [
            {"kind": "prune", "importance": "l1", "target": {"macs_ratio": 0.5},
             "round_to": 8},
            {"kind": "quantize", "mode": "ptq", "target": "onnxruntime-cpu",
             "calibration": {"method": "minmax"},
             "speed_check": {"batch_sizes": [1], "iterations": 10}}],
        "bench": {"runtimes": ["onnxruntime-cpu"], "batch_sizes": [1], "warmup": 3,
                  "iterations": 10, "target_rel_ci": None, "accuracy": True},
        "resources": {"max_memory_gb": MEMORY_GB},   # deploykit stops first, with its error
    }


def train_size(source: str, name: str, size: int) -> int:
    """The smallest input from ``size`` up (in steps of 8, to 512) at which the model's
    training forward runs: inception_v3's auxiliary head needs far more than its 75x75."""
    import torch

    from deploykit.models import build_model
    from deploykit.recipe import ModelSpec

    model = build_model(ModelSpec(source=source, name=name, num_classes=10)).train()
    for s in range(size, 513, 8):
        try:
            with torch.no_grad():
                model(torch.zeros(2, 3, s, s))
            return s
        except RuntimeError:
            continue
    return size


def run_one(source: str, name: str, size: int, out: Path) -> None:
    """The worker: one model through the chain; writes one JSON row to ``out``."""
    import resource

    from deploykit.errors import DeployKitError

    row: dict = {"source": source, "model": name, "input": size}
    t0 = time.perf_counter()
    try:
        import deploykit
        from deploykit.recipe import parse_recipe

        size = row["input"] = train_size(source, name, size)

        with tempfile.TemporaryDirectory() as tmp:
            report = deploykit.run(parse_recipe(recipe_for(source, name, size), name,
                                                check_paths=False), Path(tmp) / "run")
        row.update(status="ok", **summarize(report))
    except DeployKitError as e:
        row.update(status="DeployKitError", message=str(e).splitlines()[0][:300])
    except Exception as e:   # a traceback: what the sweep exists to find
        row.update(status="traceback", message=f"{type(e).__name__}: {str(e)[:300]}",
                   traceback=traceback.format_exc()[-2000:])
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    out.write_text(json.dumps(row))


def summarize(report) -> dict:
    base, pruned, q = report.candidates[0], report.candidates[1], report.candidates[-1]

    def p50(c):
        lr = c.latency_at("onnxruntime-cpu", 1)
        return None if lr is None else lr.p50_ms

    prune_metrics = next(s["metrics"] for s in report.stages if s["name"] == "prune")
    quant_metrics = next(s["metrics"] for s in report.stages if s["name"] == "quantize")
    precision = q.arch.get("layer_precision", {})
    return {
        "macs_before": base.macs, "macs_after": pruned.macs,
        "macs_ratio": pruned.macs / base.macs, "macs_target_met":
            prune_metrics.get("macs_target_met"),
        "params_before": base.params, "params_after": pruned.params,
        "parity_float_abs": pruned.parity.get("max_abs_error"),
        "parity_float_vs_range": pruned.parity.get("max_error_vs_range"),
        "parity_int8_vs_range": q.parity.get("max_error_vs_range"),
        "parity_int8_noise_floor": q.parity.get("noise_floor_vs_range"),
        "left_whole": len(prune_metrics.get("left_whole", {})),
        "int8_layers": sum(v == "int8" for v in precision.values()),
        "layers": len(precision),
        "p50_float_ms": p50(base), "p50_pruned_ms": p50(pruned), "p50_int8_ms": p50(q),
        "int8_pays_stage": quant_metrics.get("int8_pays"),
        "recommendation": report.recommendation,
        "peak_rss_stage_gb": {s["name"]: s.get("peak_rss_gb") for s in report.stages},
    }


def _rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def sweep_one(source: str, name: str, size: int, timeout: float, max_gb: float) -> dict:
    """Run the worker in a new process with a time and a memory limit."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--one", source, name, str(size), str(out)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "DEPLOYKIT_NO_PROGRESS": "1"},
                                start_new_session=True, text=True)
        t0, peak, why = time.time(), 0.0, None
        while proc.poll() is None:
            peak = max(peak, _rss_gb(proc.pid))
            if peak > max_gb:
                why = f"memory: resident memory passed {max_gb} GiB; stopped"
            elif time.time() - t0 > timeout:
                why = f"time: over {timeout:.0f} s; stopped"
            if why:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.5)
        if why or not out.is_file():
            err = (proc.stderr.read() if proc.stderr else "")[-500:]
            return {"source": source, "model": name, "input": size,
                    "status": "limit" if why else "crashed",
                    "message": why or f"worker exited {proc.returncode}: {err}",
                    "seconds": round(time.time() - t0, 1), "peak_rss_gb": round(peak, 2)}
        return json.loads(out.read_text())


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _peaks(r: dict) -> str:
    """Peak resident memory per stage (GiB) where the row has it, else the process's peak."""
    per = r.get("peak_rss_stage_gb") or {}
    if not any(per.values()):
        return f"{_fmt(r.get('peak_rss_gb'), '.1f')} (process)"
    return " / ".join(_fmt(per.get(k), ".1f") for k in ("train", "prune", "quantize"))


def table(rows: list[dict]) -> str:
    lines = ["| model | input | status | MACs before -> after | params after | parity float "
             "(abs / vs range) | parity INT8 (vs range / noise floor) | INT8 layers | "
             "pruned / float b1 | INT8 / float b1 | peak GiB (train / prune / quantize) | s |",
             "|---|---:|---|---|---:|---|---|---:|---:|---:|---|---:|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['source']}:{r['model']} | {r['input']} | **{r['status']}**: "
                         f"{r.get('message', '')[:160]} | | | | | | | | "
                         f"{_fmt(r.get('peak_rss_gb'), '.1f')} (process) | {r['seconds']:.0f} |")
            continue
        pf, pp, pq = r["p50_float_ms"], r["p50_pruned_ms"], r["p50_int8_ms"]
        lines.append(
            f"| {r['source']}:{r['model']} | {r['input']} | ok"
            f"{'' if r.get('macs_target_met', True) else ' (MACs target missed)'}"
            f"{f' ({w} layers left whole)' if (w := r.get('left_whole')) else ''} | "
            f"{r['macs_before'] / 1e6:.1f} M -> {r['macs_after'] / 1e6:.1f} M "
            f"({r['macs_ratio']:.2f}x) | {r['params_after'] / 1e6:.2f} M | "
            f"{_fmt(r['parity_float_abs'], '.1e')} / {_fmt(r['parity_float_vs_range'], '.1e')} | "
            f"{_fmt(r.get('parity_int8_vs_range'), '.2g')} / "
            f"{_fmt(r.get('parity_int8_noise_floor'), '.2g')} | "
            f"{r['int8_layers']}/{r['layers']} | "
            f"{_fmt(pp / pf if pf and pp else None, '.2f')} | "
            f"{_fmt(pq / pf if pf and pq else None, '.2f')}"
            f"{'' if not r.get('recommendation') else ' (slower than pruned)'} | "
            f"{_peaks(r)} | {r['seconds']:.0f} |")
    done = [r for r in rows if r["source"] == "torchvision"]
    ok = sum(r["status"] == "ok" for r in done)
    clean = sum(r["status"] in ("ok", "DeployKitError") for r in done)
    lines.append("")
    lines.append(f"torchvision: {ok}/{len(done)} complete the chain, {clean}/{len(done)} "
                 f"complete or stop with a DeployKitError; tracebacks: "
                 f"{sum(r['status'] == 'traceback' for r in rows)}")
    return "\n".join(lines)


def _commit() -> str:
    """HEAD's short hash, with ``+dirty`` when deploykit/ has uncommitted changes."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=HERE).stdout
    dirty = git("status", "--porcelain", "--", str(HERE.parents[1] / "deploykit")).strip()
    return git("rev-parse", "--short", "HEAD").strip() + ("+dirty" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=4, metavar=("SOURCE", "NAME", "SIZE", "OUT"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="+", help="model names (default: all; with --timm, "
                    "timm names too)")
    ap.add_argument("--timm", action="store_true", help="also the timm selection")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per model")
    ap.add_argument("--max-memory-gb", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--redo", action="store_true", help="rerun models already in --out")
    ap.add_argument("--table", action="store_true", help="print the table of --out and stop")
    args = ap.parse_args()
    if args.one:
        source, name, size, out = args.one
        return run_one(source, name, int(size), Path(out))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
    if args.table:
        print(table(results["rows"]))
        return None
    todo = torchvision_models() + (timm_models() if args.timm else [])
    if args.models:
        todo = [t for t in todo if t[1] in args.models]
    from deploykit.bench import environment

    results.update(date=time.strftime("%Y-%m-%d %H:%M"), environment=environment(2))
    done = {(r["source"], r["model"]) for r in results["rows"]}
    for source, name, size, _ in todo:
        if (source, name) in done and not args.redo:
            continue
        commit = _commit()   # per row: each worker imports the code on disk when it starts
        row = {**sweep_one(source, name, size, args.timeout, args.max_memory_gb),
               "commit": commit, "lr": recipe_for(source, name, size)["train"]["lr"]}
        results["rows"] = [r for r in results["rows"]
                           if (r["source"], r["model"]) != (source, name)] + [row]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{source}:{name} @{size}: {row['status']} {row.get('message', '')[:120]} "
              f"({row['seconds']:.0f} s, {row.get('peak_rss_gb', 0):.1f} GiB)", flush=True)
    print(table(results["rows"]))
    return None


if __name__ == "__main__":
    main()
