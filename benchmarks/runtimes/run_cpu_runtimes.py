"""CPU runtimes side by side: ONNX Runtime and OpenVINO on the same ONNX files, float and INT8.

L18 task (torchvision models at 224x224, random weights: latency does not depend on them;
calibration on random images): per model, the float model, INT8 for each target
(``onnxruntime-cpu``, ``openvino``; first/last float), and the chain (prune to 0.5x MACs, l1,
``round_to`` 16, then INT8 for each target). Every file runs on both runtimes; all of one
model's (file, runtime) pairs are timed alternately in one process at each batch size, so
every ratio in a row is fair. Each row also gets the MACs it achieved per second and the
fraction of the CPU's peak for its precision (threads x clock x MACs per cycle of the
instruction set), and OpenVINO's execution precision of each compute layer.

Usage (from the repository root; about 10 minutes on 2 cores for the three models):
    python benchmarks/runtimes/run_cpu_runtimes.py [--models resnet18 mobilenet_v2
        mobilenet_v3_large] [--batches 1 16] [--iterations 40]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import save_results, stamp, time_runner_pairs

from deploykit.bench import CpuRows, environment
from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.models import build_model, count_macs_params, file_size_bytes, find_first_last
from deploykit.prune import prune_to_macs
from deploykit.quant import build_quantized
from deploykit.recipe import ModelSpec, PruneSpec, QuantizeSpec
from deploykit.report.model import LatencyRecord
from deploykit.runtimes import make_runner

OUT = Path(__file__).resolve().parent / "results" / "cpu_runtimes_l18.json"
SHAPE = (3, 224, 224)
RUNTIMES = ("onnxruntime-cpu", "openvino-cpu")


def candidates(name: str, calib: list[torch.Tensor], tmp: Path
               ) -> dict[str, tuple[Path, str, int]]:
    """label -> (ONNX file, precision, MACs) for one model."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(source="torchvision", name=name, num_classes=1000)).eval()
    first, last = find_first_last(model, SHAPE)
    macs = count_macs_params(model, SHAPE)[0]
    pruned, _, _ = prune_to_macs(model, SHAPE, PruneSpec(target={"macs_ratio": 0.5},
                                                         round_to=16),
                                 [last], macs // 2, 0.02 * macs)
    pruned_macs = count_macs_params(pruned, SHAPE)[0]
    out: dict[str, tuple[Path, str, int]] = {}

    def add(label: str, module: torch.nn.Module, precision: str, n_macs: int) -> None:
        log(f"{name}: exporting {label}")
        out[label] = (export_onnx(module, SHAPE, tmp / f"{name}-{label}.onnx"), precision,
                      n_macs)

    add("float", model, "fp32", macs)
    add("pruned float", pruned, "fp32", pruned_macs)
    for target in ("onnxruntime-cpu", "openvino"):
        spec = QuantizeSpec(target=target)
        add(f"int8 ({target})", build_quantized(model, spec, [first, last], calib), "int8",
            macs)
        add(f"chain int8 ({target})", build_quantized(pruned, spec, [first, last], calib),
            "int8", pruned_macs)
    return out


def table(results: dict, batches: tuple[str, str] = ("1", "16")) -> str:
    """The Markdown table of ``results`` (this script's JSON): per model, each candidate on
    each runtime (INT8 files on the runtime of their target, and the ONNX Runtime-target file
    on OpenVINO too)."""
    b1, bn = batches
    lines = [f"| model | candidate | runtime | p50 b{b1} (ms) | p50 b{bn} (ms) | vs ORT float "
             f"b{b1} / b{bn} | INT8 vs its float twin b{b1} / b{bn} | of CPU peak b{bn} |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        target = row["candidate"][row["candidate"].find("(") + 1:-1] if "(" in \
            row["candidate"] else None
        if target == "openvino" and row["runtime"] != "openvino-cpu":
            continue   # the OpenVINO-target file is made for OpenVINO
        ms, vs, twin = row["p50_ms"], row["speedup_vs_ort_float"], \
            row["speedup_vs_float_twin_same_runtime"]
        int8 = (f"{twin[b1]:.2f}x / {twin[bn]:.2f}x" if row["precision"] == "int8" else "-")
        peak = row["peak_fraction"][bn]
        lines.append(f"| {row['model']} | {row['candidate']} | {row['runtime']} | "
                     f"{ms[b1]:.2f} | {ms[bn]:.2f} | {vs[b1]:.2f}x / {vs[bn]:.2f}x | {int8} | "
                     f"{'-' if peak is None else f'{100 * peak:.0f}%'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+",
                    default=["resnet18", "mobilenet_v2", "mobilenet_v3_large"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --out")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(8, *SHAPE, generator=g) for _ in range(2)]
    results = {"task": "L18 on ONNX Runtime CPU and OpenVINO CPU", "date": stamp(),
               "environment": environment(args.threads), "threads": args.threads,
               "rows": []}
    rows = CpuRows()
    for name in args.models:
        files = candidates(name, calib, tmp)
        runners = {(label, rt): make_runner(rt, onnx_path=path, threads=args.threads,
                                            precision=prec)
                   for label, (path, prec, _) in files.items() for rt in RUNTIMES}
        layers = {label: dict(collections.Counter(
            runners[(label, "openvino-cpu")].execution_precisions().values()))
            for label in files}
        timings: dict[tuple[str, str], dict[int, LatencyRecord]] = {k: {} for k in runners}
        timed = time_runner_pairs(runners, SHAPE, args.batches, args.iterations,
                                  what=f"{name}: ")
        for (label, rt), by_batch in timed.items():
            for b, st in by_batch.items():
                rec = LatencyRecord.from_stats(st, runtime=rt, device="cpu",
                                               precision=files[label][1],
                                               threads=args.threads, name=rt)
                rows.fill(rec, files[label][2])
                timings[(label, rt)][b] = rec
        ort_float = timings[("float", "onnxruntime-cpu")]
        for (label, rt), recs in timings.items():
            twin = "pruned float" if label.startswith("chain") else "float"
            own_float = timings[(twin, rt)]
            row = {"model": name, "candidate": label, "runtime": rt,
                   "precision": files[label][1], "macs": files[label][2],
                   "onnx_bytes": file_size_bytes(files[label][0]),
                   "openvino_layer_precisions": layers[label],
                   "p50_ms": {str(b): r.p50_ms for b, r in recs.items()},
                   "speedup_vs_ort_float": {str(b): ort_float[b].p50_ms / r.p50_ms
                                            for b, r in recs.items()},
                   "speedup_vs_float_twin_same_runtime": {
                       str(b): own_float[b].p50_ms / r.p50_ms for b, r in recs.items()},
                   "gmacs_per_s": {str(b): r.gmacs_per_s for b, r in recs.items()},
                   "peak_fraction": {str(b): r.peak_fraction for b, r in recs.items()},
                   "peak_basis": next(iter(recs.values())).peak_basis}
            results["rows"].append(row)
            log(f"{name} {label} on {rt}: " + ", ".join(
                f"b{b} {r.p50_ms:.2f} ms ({row['speedup_vs_ort_float'][str(b)]:.2f}x ORT "
                f"float, {100 * (r.peak_fraction or 0):.0f}% of peak)" for b, r in recs.items()))
        save_results(args.out, results)


if __name__ == "__main__":
    main()
