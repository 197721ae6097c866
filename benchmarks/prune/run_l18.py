"""L18 pruning benchmark: MACs vs measured ONNX Runtime CPU latency at 224x224.

For torchvision resnet18 and mobilenet_v2 (random weights: latency does not depend on them):
prune to 0.5x MACs (l1, round_to 8) and search ``latency_ratio: 0.5``; time each against the
float model alternately in one process, batch 1 and 16, 2 threads.

Usage: python benchmarks/prune/run_l18.py [--models resnet18 mobilenet_v2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ort_latency, save_results, stamp

from deploykit.bench import LatencyProbe
from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.models import build_model, count_macs_params, find_first_last
from deploykit.prune import macs_for_latency, prune_to_macs
from deploykit.recipe import ModelSpec, PruneSpec

OUT = Path(__file__).resolve().parent / "results" / "l18_macs_and_latency_targets.json"
SHAPE = (3, 224, 224)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    results = {"date": stamp(), "machine": "2-core x86_64 CPU (project machine)", "rows": []}
    tmp = Path(tempfile.mkdtemp())
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(ModelSpec(source="torchvision", name=name, num_classes=1000)).eval()
        last = find_first_last(model, SHAPE)[1]
        base_macs = count_macs_params(model, SHAPE)[0]
        paths = {"float": export_onnx(model, SHAPE, tmp / f"{name}.onnx")}
        macs = {"float": base_macs}
        spec = PruneSpec(target={"macs_ratio": 0.5}, round_to=8)
        half, _, _ = prune_to_macs(model, SHAPE, spec, [last], base_macs // 2, 0.02 * base_macs)
        paths["macs_0.5"] = export_onnx(half, SHAPE, tmp / f"{name}-half.onnx")
        macs["macs_0.5"] = count_macs_params(half, SHAPE)[0]
        lspec = PruneSpec(target={"latency_ratio": 0.5, "batch_size": 16}, round_to=8)
        t = lspec.target
        probe = LatencyProbe(model, SHAPE, t.runtime, t.batch_size, t.threads, tmp)
        mr, probes = macs_for_latency(model, SHAPE, lspec, [last], base_macs, None, probe.ratio)
        lat_model, _, _ = prune_to_macs(model, SHAPE, lspec, [last], int(mr * base_macs),
                                        0.02 * base_macs)
        paths["latency_0.5"] = export_onnx(lat_model, SHAPE, tmp / f"{name}-lat.onnx")
        macs["latency_0.5"] = count_macs_params(lat_model, SHAPE)[0]
        lat = ort_latency(paths, SHAPE, batches=(1, 16), iterations=40)
        for key in ("macs_0.5", "latency_0.5"):
            row = {"model": name, "candidate": key, "macs": macs[key],
                   "macs_ratio": macs[key] / base_macs,
                   "float_ms": {str(b): v for b, v in lat["float"].items()},
                   "cand_ms": {str(b): v for b, v in lat[key].items()},
                   "speedup": {str(b): lat["float"][b] / lat[key][b] for b in lat["float"]},
                   "latency_probes_b16": probes if key == "latency_0.5" else None}
            results["rows"].append(row)
            log(f"{name} {key}: {row['macs_ratio']:.3f}x MACs, speed-up {row['speedup']}")
        save_results(OUT, results)
    print(markdown(results))


def markdown(r: dict) -> str:
    lines = ["| model | candidate | MACs | MACs ratio | latency ratio b1 / b16 | "
             "speed-up b1 / b16 |",
             "|---|---|---:|---:|---:|---:|"]
    for row in r["rows"]:
        s = row["speedup"]
        lines.append(f"| {row['model']} | {row['candidate']} | {row['macs'] / 1e6:.0f} M | "
                     f"{row['macs_ratio']:.2f}x | {1 / s['1']:.2f}x / {1 / s['16']:.2f}x | "
                     f"{s['1']:.2f}x / {s['16']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
