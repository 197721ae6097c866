"""The subcommands: each parses nothing, takes the parsed arguments and calls one library
function (imported when the command runs, so ``deploykit --help`` stays fast)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploykit.errors import DeployKitError


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
    from deploykit.models import parse_model_ref
    from deploykit.recipe.loader import parse_recipe
    from deploykit.tasks.detect.models import DETECTORS
    from deploykit.tasks.summary import summarize_task_model

    spec = parse_model_ref(target, args.num_classes)
    task = args.task or ("detection" if spec.name in DETECTORS else "classification")
    if spec.name in DETECTORS and spec.source == "builtin":
        spec = spec.model_copy(update={"source": "torchvision"})
    detection = task == "detection"
    raw = {"name": "inspect", "task": task, "model": spec.model_dump(exclude_none=True),
           "data": {"kind": "shapes" if detection else "synthetic",
                    "image_size": args.image_size or (320 if detection else 32)}}
    if detection:
        raw["bench"] = {"batch_sizes": [1]}
    for summary in summarize_task_model(parse_recipe(raw, f"inspect {target}", False)):
        print_table(summary.table())
        print(summary.footer())
    return 0
