"""Benchmark task GPU: deploykit's torch-cuda runner on a real GPU, in one script that fits in
8 minutes on any CUDA machine with PyTorch and torchvision.

    python benchmarks/gpu/run_gpu.py                     # a machine that reaches PyPI
    python benchmarks/gpu/run_gpu.py --wheels WHEELS/    # offline: wheels of what is missing

1. Makes deploykit importable: it runs from this checkout; the packages it needs that the
   machine lacks (torch-pruning, pydantic, tensorly, ...) are installed from ``--wheels`` into
   a private folder, or from PyPI without it.
2. Runs the GPU tests (the real-GPU ones, and the fake-GPU ones again) with pytest.
3. Times torchvision resnet18, mobilenet_v2 and resnet50 at 224 (random weights: speed only),
   float and pruned to 0.5x MACs, in each set-up at batch 1 and 64: ms (CUDA events, input on
   the GPU), pruned/float speed-up, TFLOP/s, fraction of the GPU's dense FP16 peak, memory.
   A plain CUDA-event loop times the same fp32 eager pairs, so deploykit's ratio can be checked.
4. Runs the quickstart recipe with torch-cuda added to its runtimes.
5. Writes the table into benchmarks/gpu/README.md (between the gpu-table markers) with the date
   and GPU, and the log and JSON into benchmarks/gpu/results/.

Without a GPU it says so and exits 2, leaving the README's rows "not measured".
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- gpu-table:start -->", "<!-- gpu-table:end -->"
MODELS = ("resnet18", "mobilenet_v2", "resnet50")
# (precision, channels_last, cuda_graphs): fp32 eager first (the ratio checked against a
# plain loop), then what GPU deployments use
SETUPS = (("fp32", False, False), ("fp16", True, False), ("fp16", True, True),
          ("bf16", True, True))
NEEDS = {"torch_pruning": "torch-pruning", "pydantic": "pydantic", "tensorly": "tensorly",
         "yaml": "pyyaml", "rich": "rich", "onnxscript": "onnxscript",
         "matplotlib": "matplotlib", "sklearn": "scikit-learn", "torchmetrics": "torchmetrics",
         "faster_coco_eval": "faster-coco-eval", "pytest": "pytest"}
GPU_TESTS = ("tests/unit/test_gpu_runners.py", "tests/unit/test_gpu_setups.py",
             "tests/integration/test_gpu_recipe.py")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def install(wheels: Path | None) -> dict[str, str]:
    """The environment for the steps that import deploykit: this checkout on PYTHONPATH, and
    the missing packages installed (from ``wheels``, else PyPI) into a private folder."""
    missing = [pkg for mod, pkg in NEEDS.items() if importlib.util.find_spec(mod) is None]
    site = Path(tempfile.gettempdir()) / "deploykit-gpu-site"
    if wheels is not None:
        files = sorted(str(p) for p in wheels.glob("*.whl"))
        _log(f"installing {len(files)} wheels from {wheels} (missing here: {missing})")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--upgrade", "--target", str(site), *files], check=True)
    elif missing:
        _log(f"installing from PyPI: {missing}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(site),
                        *missing], check=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(ROOT),
                                                    env.get("PYTHONPATH", "")) if p)
    return env


def plain_event_ms(model: Any, x: Any, iterations: int, warmup: int) -> float:
    """The median of a plain CUDA-event loop around ``model(x)``: what deploykit's fp32 eager
    figures are checked against (no deploykit code)."""
    import torch

    times = []
    with torch.inference_mode():
        for i in range(warmup + iterations):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            end.synchronize()
            if i >= warmup:
                times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def prune_half(model: Any, size: int) -> Any:
    """A copy of ``model`` pruned as the prune stage does (L1, channels in steps of 8, the
    classifier and the layers torch-pruning cannot follow left whole) to half its MACs."""
    import torch

    from deploykit.models import count_macs_params, find_first_last
    from deploykit.prune import ignored_layer_names, layers_to_leave_whole, prune_to_macs
    from deploykit.recipe import PruneSpec

    shape = (3, size, size)
    macs = count_macs_params(model, shape)[0]
    spec = PruneSpec.model_validate({"kind": "prune", "importance": "l1", "round_to": 8,
                                     "target": {"macs_ratio": 0.5}})
    ignored = ignored_layer_names(model, spec, find_first_last(model, shape)[1])
    ignored = sorted({*ignored, *layers_to_leave_whole(model, torch.zeros(1, *shape))})
    pruned, _, _ = prune_to_macs(copy.deepcopy(model), shape, spec, ignored, int(0.5 * macs),
                                 0.05 * macs)
    return pruned.eval()


def measure(models: dict[str, Callable[[], Any]], size: int = 224, batches=(1, 64),
            setups=SETUPS, iterations: int = 30, warmup: int = 10,
            plain: Callable[..., float] | None = plain_event_ms) -> list[dict[str, Any]]:
    """One row per model, set-up and batch: float and pruned, timed alternately in 3 rounds."""
    import numpy as np
    import torch

    from deploykit.bench import GpuPeak, tflops
    from deploykit.models import count_macs_params
    from deploykit.runtimes import TorchCudaRunner, cuda_api, setup_name

    peak = GpuPeak(0)
    rows = []
    for name, build in models.items():
        torch.manual_seed(0)
        float_m = build().eval()
        t0 = time.time()
        pruned_m = prune_half(float_m, size)
        shape = (3, size, size)
        macs = {"float": count_macs_params(float_m, shape)[0],
                "pruned": count_macs_params(pruned_m, shape)[0]}
        _log(f"{name}: pruned to {macs['pruned'] / macs['float']:.2f}x MACs in "
             f"{time.time() - t0:.0f} s")
        for precision, cl, graphs in setups:
            runners = {k: TorchCudaRunner(copy.deepcopy(m), precision, cl, graphs)
                       for k, m in (("float", float_m), ("pruned", pruned_m))}
            for batch in batches:
                x = np.random.default_rng(0).standard_normal((batch, *shape), np.float32)
                mem = {k: r.peak_memory_mb(x) for k, r in runners.items()}
                ms: dict[str, list[float]] = {k: [] for k in runners}
                for _ in range(3):
                    for k, r in runners.items():
                        ms[k] += r.device_ms(x, iterations // 3, warmup)
                med = {k: float(np.median(v)) for k, v in ms.items()}
                row = {"model": name, "setup": setup_name(precision, cl, graphs, False),
                       "batch": batch, "float_ms": med["float"], "pruned_ms": med["pruned"],
                       "speedup": med["float"] / med["pruned"],
                       "macs_ratio": macs["pruned"] / macs["float"],
                       "float_mem_mb": mem["float"], "pruned_mem_mb": mem["pruned"],
                       "images_per_s_float": batch / med["float"] * 1e3,
                       "images_per_s_pruned": batch / med["pruned"] * 1e3}
                for k in ("float", "pruned"):
                    row[f"{k}_tflops"] = tflops(macs[k], batch, med[k])
                    row[f"{k}_peak_fraction"] = row[f"{k}_tflops"] / peak.peak()[0]
                if (precision, cl, graphs) == SETUPS[0] and plain is not None:
                    dev = cuda_api().device(0)
                    xs = torch.from_numpy(x).to(dev)
                    pm = {k: plain(copy.deepcopy(m).to(dev), xs, iterations, warmup)
                          for k, m in (("float", float_m), ("pruned", pruned_m))}
                    row["plain_speedup"] = pm["float"] / pm["pruned"]
                    row["ratio_vs_plain"] = row["speedup"] / row["plain_speedup"]
                _log(f"{name} {row['setup']} b{batch}: float {med['float']:.3f} ms, pruned "
                     f"{med['pruned']:.3f} ms ({row['speedup']:.2f}x)")
                rows.append(row)
            del runners   # free this set-up's GPU copies before the next one
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def quickstart(env: dict[str, str], work: Path) -> dict[str, Any]:
    """The quickstart recipe with torch-cuda (fp32 and fp16) beside ONNX Runtime CPU."""
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes/quickstart.yaml").read_text())
    recipe["bench"]["runtimes"] = ["onnxruntime-cpu", "torch-cuda"]
    recipe["bench"]["gpu"] = {"precisions": ["fp32", "fp16"]}
    path = work / "quickstart-gpu.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = work / "quickstart-gpu"
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "deploykit", "run", str(path), "-o", str(out)],
                          env=env, cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-3000:], proc.stderr[-3000:], flush=True)
    result: dict[str, Any] = {"exit_code": proc.returncode, "seconds": time.time() - t0}
    if (out / "report.json").is_file():
        rep = json.loads((out / "report.json").read_text())
        result["rows"] = [{"candidate": c["name"], "precision": c["precision"],
                           "setup": lr.get("setup"), "batch": lr["batch"], "p50_ms": lr["p50_ms"],
                           "device_p50_ms": lr.get("device_p50_ms"),
                           "speedup": lr.get("speedup_vs_baseline")}
                          for c in rep["candidates"] for lr in c["latency"]
                          if lr["device"] == "cuda"]
        result["not_timed"] = {c["name"]: c.get("not_timed", {}) for c in rep["candidates"]}
    return result


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | set-up | batch | float ms | pruned ms | pruned/float speed-up | "
             "TFLOP/s float / pruned | of FP16 peak float / pruned | memory MB float / pruned |"
             " fp32 eager: plain-loop speed-up |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        plain = (f"{r['plain_speedup']:.2f}x ({100 * (r['ratio_vs_plain'] - 1):+.1f}%)"
                 if "plain_speedup" in r else "")
        lines.append(
            f"| {r['model']} ({r['macs_ratio']:.2f}x MACs) | {r['setup']} | {r['batch']} | "
            f"{r['float_ms']:.3f} | {r['pruned_ms']:.3f} | {r['speedup']:.2f}x | "
            f"{r['float_tflops']:.1f} / {r['pruned_tflops']:.1f} | "
            f"{100 * r['float_peak_fraction']:.1f}% / {100 * r['pruned_peak_fraction']:.1f}% | "
            f"{r['float_mem_mb']:.0f} / {r['pruned_mem_mb']:.0f} | {plain} |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each stated as met or missed with its number."""
    def find(model: str, batch: int, setup: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["model"] == model and r["batch"] == batch
                     and r["setup"] == setup), None)

    out = []
    for model, batch, setup, goal in (("resnet50", 64, "fp16, channels_last, CUDA graphs", 1.5),
                                      ("resnet50", 64, "fp16, channels_last, eager", 1.5),
                                      ("resnet18", 1, "fp32, NCHW, CUDA graphs", 1.3),
                                      ("resnet18", 1, "fp16, channels_last, CUDA graphs", 1.3)):
        r = find(model, batch, setup)
        if r is not None:
            verdict = "met" if r["speedup"] >= goal else "missed"
            out.append(f"pruned {model} at batch {batch} ({setup}) >= {goal}x: "
                       f"{r['speedup']:.2f}x, {verdict}")
    checks = [r for r in rows if "ratio_vs_plain" in r]
    if checks:
        worst = max(checks, key=lambda r: abs(r["ratio_vs_plain"] - 1))
        verdict = "met" if abs(worst["ratio_vs_plain"] - 1) <= 0.10 else "missed"
        out.append(f"fp32 eager pruned/float ratio within 10% of a plain CUDA-event loop: worst "
                   f"{100 * (worst['ratio_vs_plain'] - 1):+.1f}% ({worst['model']} b"
                   f"{worst['batch']}), {verdict}")
    return out


def quickstart_lines(q: dict[str, Any] | None) -> list[str]:
    if q is None:
        return ["- quickstart on torch-cuda: not run"]
    lines = [f"- quickstart with torch-cuda: exit {q['exit_code']} in {q['seconds']:.0f} s"]
    for r in q.get("rows", []):
        lines.append(f"  - {r['candidate']} ({r['precision']}) {r['setup']} b{r['batch']}: "
                     f"{r['p50_ms']:.3f} ms end to end, device "
                     f"{r['device_p50_ms'] or float('nan'):.3f} ms, {r['speedup'] or 0:.2f}x")
    for cand, why in q.get("not_timed", {}).items():
        lines += [f"  - {cand}: {rt} {reason}" for rt, reason in why.items()]
    return lines


def write_readme(text: str, readme: Path = README) -> None:
    body = readme.read_text()
    if START not in body or END not in body:
        raise SystemExit(f"{readme} lacks the {START} / {END} markers")
    head, rest = body.split(START, 1)
    readme.write_text(head + START + "\n" + text.strip() + "\n" + END + rest.split(END, 1)[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheels", type=Path, help="folder of wheels for an offline GPU host")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-quickstart", action="store_true")
    ap.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing measured; benchmarks/gpu/README.md keeps its rows "
              "'not measured'. Run this on a machine with an NVIDIA GPU.", file=sys.stderr)
        return 2
    if args.measure_only:   # the child: deploykit importable now
        import torchvision

        rows = measure({m: getattr(torchvision.models, m) for m in MODELS})
        args.json.write_text(json.dumps(rows))
        return 0
    t0 = time.time()
    env = install(args.wheels)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "gpu": torch.cuda.get_device_name(0),
                               "torch": torch.__version__, "cuda": torch.version.cuda}
    if not args.skip_tests:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:logging",
                               "-p", "no:cacheprovider", *GPU_TESTS], env=env, cwd=ROOT,
                              capture_output=True, text=True)
        print(proc.stdout[-6000:], proc.stderr[-2000:], flush=True)
        results["gpu_tests"] = {"exit_code": proc.returncode,
                                "summary": proc.stdout.strip().splitlines()[-1:]}
    with tempfile.TemporaryDirectory() as tmp:
        rows_path = Path(tmp) / "rows.json"
        subprocess.run([sys.executable, __file__, "--measure-only", "--json", str(rows_path)],
                       env=env, check=True)
        results["rows"] = json.loads(rows_path.read_text())
        if not args.skip_quickstart and time.time() - t0 < 300:
            results["quickstart"] = quickstart(env, Path(tmp))
    results["targets"] = targets(results["rows"])
    results["wall_seconds"] = round(time.time() - t0, 1)
    (HERE / "results").mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d", time.gmtime())
    (HERE / "results" / f"gpu_{stamp}.json").write_text(json.dumps(results, indent=2))
    tests = results.get("gpu_tests", {})
    text = "\n".join([
        f"Measured {results['date']} on {results['gpu']} (torch {results['torch']}, CUDA "
        f"{results['cuda']}) by `python benchmarks/gpu/run_gpu.py`, {results['wall_seconds']:.0f}"
        f" s; GPU tests: {' '.join(tests.get('summary', ['not run']))}.", "",
        table(results["rows"]), "", *[f"- {t}" for t in results["targets"]],
        *quickstart_lines(results.get("quickstart"))])
    write_readme(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
