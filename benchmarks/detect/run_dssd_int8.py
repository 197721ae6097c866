"""D-SSD INT8: the float teacher, the pruned and recovered student, and both in INT8 (network
INT8; resize, decoding and NMS float), each exported end to end to ONNX and timed in ONNX
Runtime on the CPU at batch 1, the network alone and end to end, candidates alternating.

Needs the cache of run_dssd.py (teacher and the recovered student of ``--variant`` and
``--seed``). The student's INT8 network falls back to float layer by layer (SQNR ranking) only
until its mAP@.5 is within ``--max-map-drop`` points of the float student. The candidates
are measured once per ``--score-thresh``, set on every candidate alike (0.001 is
torchvision's SSDlite default, meant for measuring mAP; deployments use higher ones).

    python benchmarks/detect/run_dssd_int8.py --variant plain --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from common import save_results, stamp  # noqa: E402
from run_dssd import CACHE, CLASSES, MODEL, SIZE, WIDTH, data  # noqa: E402

from deploykit.bench import environment  # noqa: E402
from deploykit.host.progress import log  # noqa: E402
from deploykit.measure import measure_candidates  # noqa: E402
from deploykit.recipe import BenchSpec, QuantizeSpec, Recipe  # noqa: E402
from deploykit.stages import quantize  # noqa: E402
from deploykit.state import Candidate, PipelineState  # noqa: E402
from deploykit.tasks import get_task  # noqa: E402
from deploykit.tasks.detect.models import build_detector  # noqa: E402

OUT = ROOT / "results" / "dssd_int8.json"


def int8(model, loaders, spec: QuantizeSpec, out: Path) -> Candidate:
    state = PipelineState.start(model, ("", ""), (3, SIZE, SIZE), out, False)
    state.task = get_task("detection")
    state = quantize.run(state, loaders, spec)
    cand = state.candidates[-1]
    cand.arch["quantize_metrics"] = {k: v for k, v in state.history[-1].metrics.items()
                                     if k != "sensitivity"}
    return cand


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="plain")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-map-drop", type=float, default=1.0)
    ap.add_argument("--score-thresh", type=float, nargs="+", default=[0.001, 0.05])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--budget-s", type=float, default=60.0, help="timing budget per field")
    args = ap.parse_args()
    torch.set_num_threads(2)
    loaders = data(argparse.Namespace(batch=16, train_images=3000, val_images=args.val_images),
                   0)
    teacher = build_detector(MODEL, CLASSES, SIZE, WIDTH)
    teacher.load_state_dict(torch.load(CACHE / "dssd_teacher.pt", weights_only=True))
    student = torch.load(CACHE / f"dssd_{args.variant}_s{args.seed}.pt", weights_only=False)
    for m in (teacher, student):
        m.eval()
    work = CACHE / "int8"
    cands = [Candidate("teacher", teacher)]
    cands.append(int8(teacher, loaders, QuantizeSpec(), work / "teacher"))
    cands[-1].name = "teacher-int8"
    cands.append(Candidate("student", student))
    cands.append(int8(student, loaders, QuantizeSpec(max_map_drop=args.max_map_drop),
                      work / "student"))
    cands[-1].name = "student-int8"
    bench = BenchSpec(runtimes=["onnxruntime-cpu"], batch_sizes=[1], threads=args.threads,
                      iterations=100, warmup=20, max_iterations=2000,
                      time_budget_s=args.budget_s, target_rel_ci=0.01)
    rows = []
    for thresh in args.score_thresh:
        for c in cands:
            c.model.score_thresh = thresh
        recipe = Recipe.model_validate({   # what the measurement reads: export, bench, seed
            "task": "detection", "data": {"kind": "shapes", "image_size": SIZE},
            "model": {"source": "torchvision", "name": MODEL, "num_classes": CLASSES},
            "export": {"onnx": {"opset": 18}}, "bench": bench.model_dump()})
        reports = measure_candidates(cands, loaders, recipe, work / "measure",
                                     get_task("detection"))
        for r, c in zip(reports, cands, strict=True):
            e2e, net = r.latency[0], r.network_latency[0]
            rows.append({"score_thresh": thresh, "name": r.name,
                         "precision": r.precision, "network_macs": r.macs,
                         "onnx_mb": r.onnx_size_bytes / 1e6,
                         "map50_ort": r.map50_pct["onnxruntime-cpu"],
                         "map50_torch": r.map50_pct["torch-cpu"],
                         "map_ort": r.map_pct["onnxruntime-cpu"],
                         "e2e_p50_ms": e2e.p50_ms, "e2e_speedup": e2e.speedup_vs_baseline,
                         "network_p50_ms": net.p50_ms,
                         "network_speedup": net.speedup_vs_baseline, "parity": r.parity,
                         "keep_float": len(r.keep_float),
                         "quantize": c.arch.get("quantize_metrics")})
            log(f"score>{thresh}: {r.name:13s} mAP@.5 {rows[-1]['map50_ort']:.2f}  "
                f"e2e {e2e.p50_ms:.2f} ms ({e2e.speedup_vs_baseline:.2f}x)  network "
                f"{net.p50_ms:.2f} ms ({net.speedup_vs_baseline:.2f}x)  "
                f"{rows[-1]['onnx_mb']:.2f} MB")
    results = {"date": stamp(), "environment": environment(args.threads),
               "setup": vars(args), "model": f"{MODEL} width_mult {WIDTH} at {SIZE} px",
               "rows": rows}
    save_results(OUT, results)
    print(json.dumps([[r["score_thresh"], r["name"], round(r["map50_ort"], 2),
                       round(r["e2e_speedup"], 2)] for r in rows]))


if __name__ == "__main__":
    main()
