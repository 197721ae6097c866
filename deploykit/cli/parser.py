"""The command line's arguments, help and examples: ``build_parser``."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploykit.cli.commands import (
    _cmd_bench,
    _cmd_compare,
    _cmd_export,
    _cmd_gate,
    _cmd_inspect,
    _cmd_report,
    _cmd_run,
    _cmd_tune,
    _cmd_verify,
)

__all__ = ["EPILOG", "build_parser"]

EPILOG = """examples:
  deploykit run recipes/quickstart.yaml
  deploykit run recipes/quickstart.yaml --output runs/qs --resume
  deploykit tune recipes/cifar10-resnet20-tune.yaml --trials 20 --output runs/r20-tune
  deploykit inspect recipes/quickstart.yaml
  deploykit inspect torchvision:mobilenet_v2 --image-size 224
  deploykit inspect torchvision:ssdlite320_mobilenet_v3_large --image-size 160
  deploykit export recipes/quickstart.yaml --checkpoint runs/qs/baseline.pt -o model.onnx
  deploykit bench model.onnx --batch 1 64 --threads 2
  deploykit report runs/qs/report.json
  deploykit verify runs/qs
  deploykit compare old/report.json runs/qs/report.json
  deploykit gate runs/qs/report.json --max-accuracy-drop 1.0 --min-speedup 1.5 --batch 64
  deploykit gate runs/qs/report.json --baseline main/report.json --max-latency-regression 5 \\
      --junit gate.xml

exit codes: 0 ok, 1 a gate failed (or verify found a changed file), 2 a problem you can fix
(the message names the file, the key and the fix), 3 a deploykit bug (the traceback is
written to a log file; set DEPLOYKIT_TRACEBACK=1 to also print it), 130 interrupted.
"""

def _version() -> str:
    from deploykit import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    from deploykit.recipe import RUNTIME_TABLE

    p = argparse.ArgumentParser(
        prog="deploykit",
        description="Turn a trained PyTorch vision model into a smaller, faster, measured one: "
                    "one YAML recipe chains training, compression, ONNX export, parity checks, "
                    "benchmarks and a report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"deploykit {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a recipe end to end and write the report",
                       description="Build/train the baseline, run the recipe's stages, export "
                                   "each candidate to ONNX, check parity, measure accuracy and "
                                   "latency, write the report (JSON, Markdown, HTML, CSV, "
                                   "Pareto plot) and apply the recipe's gates (exit 1 if one "
                                   "fails).")
    r.add_argument("recipe", help="recipe YAML file")
    r.add_argument("--output", "-o", help="run folder (default: the recipe's output pattern)")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoints (with --output, that "
                        "folder; otherwise the newest run of this recipe)")
    r.set_defaults(fn=_cmd_run)

    t = sub.add_parser(
        "tune", help="search the recipe's compression chain under a measured latency budget",
        description="Optuna trials over the recipe's tune.space, each a full run (compress, "
                    "export, parity, measure) scored on the artifact's accuracy drop and its "
                    "latency over the baseline's; writes every trial, the front, a recipe per "
                    "front point and tune.html. Rerun with the same --output to continue a "
                    "killed study; give several machines one --storage and --study to share "
                    "it. Exit 1 when no point is feasible or the best one fails the gates.")
    t.add_argument("recipe", help="recipe YAML with a tune: section")
    t.add_argument("--trials", type=int, help="finished trials the study should hold "
                   "(default: tune.trials)")
    t.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user:pw@host/db "
                   "(default: sqlite file study.db in the output folder)")
    t.add_argument("--study", help="study name (default: the recipe's name)")
    t.add_argument("--output", "-o", help="folder (default: runs/<recipe>-tune)")
    t.set_defaults(fn=_cmd_tune)

    e = sub.add_parser("export", help="export a recipe's model (and checkpoint) to ONNX",
                       description="Export to ONNX with a dynamic batch axis, run onnx.checker "
                                   "and a parity check against PyTorch.")
    e.add_argument("recipe", help="recipe YAML whose model section describes the network")
    e.add_argument("--checkpoint", type=Path, help="weights to load (default: model.checkpoint)")
    e.add_argument("--output", "-o", type=Path, default=Path("model.onnx"), help="ONNX file")
    e.set_defaults(fn=_cmd_export)

    b = sub.add_parser("bench", help="time an ONNX model (or a recipe's model) on runtimes",
                       description="Warm-up, then repeated runs until the median's 95% "
                                   "interval is tight: p50 (with interval), p90, p99, mean, "
                                   "std, throughput, run count, and the environment in --json.")
    b.add_argument("model", help="ONNX file, or a recipe YAML whose model is exported first")
    b.add_argument("--runtime", nargs="+", default=["onnxruntime-cpu"],
                   choices=[r.name for r in RUNTIME_TABLE if r.runs == "onnx"],
                   help="runtimes (GPU ones need a GPU and the gpu / tensorrt extra)")
    b.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="what the ONNX file computes in (a label; TensorRT takes precisions "
                        "from the file's types and Q/DQ nodes)")
    b.add_argument("--onnx", type=Path, help="with a recipe: where to write the exported ONNX "
                   "(default: a new folder of the recipe's output pattern, not beside the recipe)")
    b.add_argument("--batch", type=int, nargs="+", default=[1, 64], help="batch sizes")
    b.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    b.add_argument("--iterations", type=int, default=50,
                   help="timed runs per batch size, at least (default 50)")
    b.add_argument("--target-ci", type=float, default=0.02,
                   help="then repeat until the median's 95%% interval is within +- this "
                        "fraction of it (default 0.02; 0: exactly --iterations)")
    b.add_argument("--max-iterations", type=int, default=1000, help="stop here at the latest")
    b.add_argument("--budget", type=float, default=30.0,
                   help="seconds of timing per batch size at most (default 30)")
    b.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    b.add_argument("--json", type=Path, help="also write results (with environment) here")
    b.set_defaults(fn=_cmd_bench)

    rp = sub.add_parser("report", help="regenerate report.md/.html, results.csv, pareto.png",
                        description="Re-render every view of a report.json (e.g. after "
                                    "upgrading deploykit), beside it or into --output.")
    rp.add_argument("report", help="report.json (or its run folder)")
    rp.add_argument("--output", "-o", help="folder to write into (default: beside the report)")
    rp.set_defaults(fn=_cmd_report)

    v = sub.add_parser("verify", help="check that a run folder is finished and unchanged",
                       description="Compare every file of a run folder with the SHA-256 hashes "
                                   "its manifest.json recorded when the run finished. Exit 0: "
                                   "whole; 1: unfinished (no manifest), or a file missing, "
                                   "changed or added since.")
    v.add_argument("run", help="run folder")
    v.set_defaults(fn=_cmd_verify)

    c = sub.add_parser("compare", help="diff two reports: accuracy, MACs, size, latency",
                       description="One row per candidate and metric: A, B and the change.")
    c.add_argument("a", help="report A (e.g. main's report.json)")
    c.add_argument("b", help="report B (e.g. this branch's)")
    c.set_defaults(fn=_cmd_compare)

    g = sub.add_parser(
        "gate", help="fail (exit 1) when a report misses accuracy/speed thresholds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check a report against thresholds from the flags, or else the recipe's "
                    "gates: section stored in the report (flags override it). Checks the last "
                    "candidate unless --candidate is given.\n\nExit codes: 0 every check "
                    "passed; 1 a check failed or a metric it needs is missing (fail closed); 2 "
                    "bad input (unreadable report, no thresholds, unknown candidate).")
    g.add_argument("report", help="report.json (or its run folder)")
    g.add_argument("--baseline", type=Path,
                   help="earlier report.json, for --max-latency-regression")
    g.add_argument("--candidate", help="candidate to gate (default: the last one)")
    g.add_argument("--max-accuracy-drop", type=float, metavar="PTS",
                   help="top-1 points the candidate may lose against the baseline")
    g.add_argument("--min-speedup", type=float, metavar="X",
                   help="p50 speed-up over the baseline, same runtime and batch")
    g.add_argument("--min-speedup-over-previous", type=float, metavar="X",
                   help="p50 speed-up over the candidate before it (an INT8 model over its "
                        "float twin), same runtime and batch; 1.0: no step may slow it down")
    g.add_argument("--max-latency-ms", type=float, metavar="MS", help="latency ceiling per batch")
    g.add_argument("--percentile", choices=("p50", "p90", "p99"), default="p50",
                   help="percentile for --max-latency-ms (default p50)")
    g.add_argument("--max-size-mb", type=float, metavar="MB", help="ONNX file size ceiling")
    g.add_argument("--max-latency-regression", type=float, metavar="PCT",
                   help="percent slower than --baseline allowed beyond the measured noise")
    g.add_argument("--runtime", default="onnxruntime-cpu",
                   help="runtime the latency thresholds apply to (default onnxruntime-cpu)")
    g.add_argument("--batch", type=int, help="batch size they apply to (default: every one)")
    g.add_argument("--junit", type=Path, help="also write the checks as JUnit XML here")
    g.set_defaults(fn=_cmd_gate)

    i = sub.add_parser("inspect", help="print a resolved recipe, or a model's layers and MACs",
                       description="RECIPE.yaml: make every check `run` makes before training "
                                   "and print the recipe with every default filled in. MODEL "
                                   "(resnet20, torchvision:resnet18, timm:NAME, pkg.mod:fn, or "
                                   "a detector: torchvision:ssdlite320_mobilenet_v3_large, ...): "
                                   "print each graph the techniques work on (a detector's "
                                   "network and box head) with its compute layers, MACs, "
                                   "params, and the layers pruning keeps whole and INT8 keeps "
                                   "float by default.")
    i.add_argument("target", help="recipe YAML or model reference")
    i.add_argument("--image-size", type=int,
                   help="input size (default 32; a detector's: 320)")
    i.add_argument("--num-classes", type=int, default=10,
                   help="classes (a detector's: object classes, background not counted)")
    i.add_argument("--task", choices=("classification", "detection"),
                   help="the model's task (default: detection for torchvision's detectors, "
                        "classification otherwise; a pkg.mod:fn detector needs it)")
    i.set_defaults(fn=_cmd_inspect)
    return p
