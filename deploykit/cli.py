"""Command line: thin subcommands, each parsing its arguments and calling one library function.

Exit codes (stable): 0 ok, 1 a gate failed (or ``verify`` found a changed file), 2 user error
(bad recipe, missing file, unavailable backend, not enough memory), 3 internal error (a
deploykit bug: the traceback goes to a log file, named on screen), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from deploykit.errors import DeployKitError
from deploykit.runfiles.crashlog import write_crash_log

__all__ = ["main"]

EPILOG = """examples:
  deploykit run recipes/quickstart.yaml
  deploykit run recipes/quickstart.yaml --output runs/qs --resume
  deploykit tune recipes/cifar10-resnet20-tune.yaml --trials 20 --output runs/r20-tune
  deploykit inspect recipes/quickstart.yaml
  deploykit inspect torchvision:mobilenet_v2 --image-size 224
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
EXIT_BUG = 3


def _cmd_run(args: argparse.Namespace) -> int:
    from deploykit.host import distributed
    from deploykit.host.progress import log, print_table
    from deploykit.pipeline import resolve_output_dir, run
    from deploykit.recipe import load_recipe
    from deploykit.report import ship_verdict, summary_table
    from deploykit.runtimes import check_runtimes

    recipe = load_recipe(args.recipe)
    check_runtimes(recipe, args.recipe)   # before any training or output folder
    distributed.init_from_env()   # under torchrun: join the group; training is data-parallel
    out = distributed.broadcast_object(resolve_output_dir(recipe, args.output, args.resume))
    report = run(recipe, out, args.resume, gate=True)
    if report is None:            # a torchrun worker: rank 0 measures and reports
        return 0
    print_table(summary_table(report))
    verdict = ship_verdict(report)
    if verdict:
        log(f"verdict: {verdict}")
    if report.recommendation:
        log(f"recommendation: {report.recommendation}")
    log(f"report: {out / 'report.html'} (also report.md, report.json, results.csv, "
        f"pareto.png, the ONNX files and checkpoints) in {out}")
    return 0 if report.gate is None or report.gate["passed"] else 1


def _cmd_tune(args: argparse.Namespace) -> int:
    from deploykit.tune import tune

    return tune(args.recipe, args.trials, args.storage, args.study, args.output)


def _cmd_gate(args: argparse.Namespace) -> int:
    from deploykit.gate import gate_report

    at = {"runtime": args.runtime, "batch": args.batch}
    overrides = {
        "max_accuracy_drop": args.max_accuracy_drop, "max_size_mb": args.max_size_mb,
        "candidate": args.candidate, "baseline": args.baseline,
        "min_speedup": None if args.min_speedup is None else {"value": args.min_speedup, **at},
        "min_speedup_over_previous": None if args.min_speedup_over_previous is None
        else {"value": args.min_speedup_over_previous, **at},
        "max_latency_ms": None if args.max_latency_ms is None
        else {"value": args.max_latency_ms, "percentile": args.percentile, **at},
        "max_latency_regression": None if args.max_latency_regression is None
        else {"value": args.max_latency_regression, **at}}
    return gate_report(args.report, overrides, args.junit).exit_code


def _cmd_report(args: argparse.Namespace) -> int:
    from deploykit.host.progress import log
    from deploykit.report import rewrite_report_files

    paths = rewrite_report_files(args.report, args.output)
    log("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from deploykit.runfiles.manifest import MANIFEST, RUN_RECORD, verify_manifest

    out = Path(args.run)
    if not out.is_dir():
        raise DeployKitError(f"{out}: not a folder; pass a run folder (the --output of "
                             "`deploykit run`)")
    if not (out / MANIFEST).exists() and not (out / RUN_RECORD).exists():
        raise DeployKitError(f"{out}: not a deploykit run folder (it has neither {MANIFEST} "
                             f"nor {RUN_RECORD}); pass the --output of `deploykit run`")
    problems = verify_manifest(out)
    for line in problems:
        print(f"{out}: {line}")
    if problems:
        print(f"{out}: NOT whole ({len(problems)} problems): an unfinished run (rerun with "
              "--resume) or files changed after it finished", file=sys.stderr)
        return 1
    print(f"{out}: whole: every file matches {MANIFEST}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from deploykit.host.progress import print_table
    from deploykit.report import compare_reports, load_report

    table = compare_reports(load_report(args.a, "report A"), load_report(args.b, "report B"))
    print_table(table)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from deploykit.host.progress import log
    from deploykit.pipeline import export_model
    from deploykit.recipe import load_recipe

    res = export_model(load_recipe(args.recipe, check_paths=False), args.output, args.checkpoint)
    log(f"wrote {res.path} (parity max abs error {res.parity.max_abs_error:.2e})")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from deploykit.bench import bench_onnx_file
    from deploykit.host.progress import print_table

    path = Path(args.model)
    if path.suffix in (".yaml", ".yml"):   # a recipe: export its model (checkpoint) first
        from deploykit.pipeline import export_model, resolve_output_dir
        from deploykit.recipe import load_recipe

        recipe = load_recipe(path, check_paths=False)   # the ONNX goes under a run folder
        onnx_path = args.onnx or resolve_output_dir(recipe, None, False) / f"{recipe.name}.onnx"
        path = export_model(recipe, onnx_path).path
    result = bench_onnx_file(path, args.runtime, args.batch, args.threads, args.precision,
                             iterations=args.iterations, warmup=args.warmup,
                             target_rel_ci=args.target_ci or None,
                             max_iterations=args.max_iterations, budget_s=args.budget,
                             json_path=args.json)
    print_table(result.table())
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    target = args.target
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():   # a recipe file
        from deploykit.host.progress import log
        from deploykit.pipeline import preflight
        from deploykit.recipe import load_recipe, recipe_to_yaml
        from deploykit.runtimes import check_runtimes

        recipe = load_recipe(target)   # every check `run` makes before it reads data or trains
        check_runtimes(recipe, target)
        if recipe.tune is not None:
            from deploykit.tune.space import SearchSpace

            SearchSpace.from_recipe(recipe, target)
        preflight(recipe)
        print(recipe_to_yaml(recipe), end="")
        log(f"{target}: checked as `deploykit run` does before any training (paths, runtimes, "
            "the model against every stage)")
        return 0
    from deploykit.host.progress import print_table
    from deploykit.models import parse_model_ref, summarize_model

    summary = summarize_model(parse_model_ref(target, args.num_classes), args.image_size)
    print_table(summary.table())
    print(summary.footer())
    return 0


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
                       description="RECIPE.yaml: print it with every default filled in. MODEL "
                                   "(resnet20, torchvision:resnet18, timm:NAME, pkg.mod:fn): "
                                   "print compute layers, MACs, params, first/last layer.")
    i.add_argument("target", help="recipe YAML or model reference")
    i.add_argument("--image-size", type=int, default=32)
    i.add_argument("--num-classes", type=int, default=10)
    i.set_defaults(fn=_cmd_inspect)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; user errors print one paragraph and return 2,
    anything else is a deploykit bug: one paragraph naming a log file with the traceback, 3."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except DeployKitError as e:
        print(f"deploykit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("deploykit: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    except MemoryError:
        print("deploykit: error: out of memory; lower data.batch_size or data.image_size, or "
              "set resources.max_memory_gb to stop early with an estimate", file=sys.stderr)
        return 2
    except Exception as e:
        try:
            where = f"the traceback is in {write_crash_log(argv)}"
        except OSError:
            where = "the traceback could not be written to a log file"
        print(f"deploykit: internal error: {type(e).__name__}: {str(e)[:300]}\n"
              f"This is a deploykit bug, not a problem with your input; {where} (attach it "
              "to a bug report).", file=sys.stderr)
        if os.environ.get("DEPLOYKIT_TRACEBACK"):
            traceback.print_exc()
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
