"""``run(recipe) -> Report``: the one place that knows the order of things."""

from __future__ import annotations

import contextlib
import datetime as _dt
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from deploykit.bench import ParityResult, check_parity, environment, yardstick_ms
from deploykit.errors import DeployKitError, RecipeError
from deploykit.export import export_onnx
from deploykit.gate import apply_gate, load_baseline
from deploykit.host import distributed
from deploykit.host.progress import log
from deploykit.host.resources import MemoryMeter, memory_limit_gb, memory_watchdog
from deploykit.measure import measure_candidates
from deploykit.models import make_checkpoint
from deploykit.recipe import (
    ARTIFACT_SECTIONS,
    Recipe,
    StageSpec,
    load_recipe,
    parse_recipe,
    recipe_hash,
    recipe_to_dict,
)
from deploykit.report import Report, int8_recommendation, write_report_files
from deploykit.runfiles.atomic import save_torch
from deploykit.runfiles.lock import run_lock
from deploykit.runfiles.manifest import check_run_record, write_manifest, write_run_record
from deploykit.runtimes import OrtRunner, TorchRunner, check_runtimes
from deploykit.stages import get_stage
from deploykit.state import PipelineState, StageRecord
from deploykit.tasks import Task, TaskModel, get_task
from deploykit.tasks.restore import load_model
from deploykit.train import fit, seed_everything

__all__ = ["AfterStage", "ExportResult", "export_model", "resolve_output_dir", "run"]

AfterStage = Callable[[int, PipelineState], None]
"""Called as ``after_stage(i, state)`` after stage ``i``; it may raise to stop the run."""


def resolve_output_dir(recipe: Recipe, output: str | Path | None, resume: bool) -> Path:
    """The run folder: ``output`` if given; with ``resume``, the newest existing run of the recipe
    (a folder matching the ``output`` pattern exactly: recipe ``qs`` never resumes ``qs-big``'s).

    Raises:
        DeployKitError: ``resume`` without any earlier run to continue.
    """
    if output is not None:
        return Path(output)
    pattern = recipe.output.replace("{recipe}", recipe.name)
    if resume:
        parent = Path(pattern).parent
        head, _, tail = Path(pattern).name.partition("{timestamp}")
        stamp = r"\d{8}-\d{6}" if _ else ""
        mine = re.compile(re.escape(head) + stamp + re.escape(tail))
        runs = sorted(p for p in parent.iterdir()
                      if p.is_dir() and mine.fullmatch(p.name)) if parent.is_dir() else []
        if not runs:
            raise DeployKitError(f"--resume: no earlier run matching {pattern!r}; pass "
                                 "--output DIR of the run to continue")
        return runs[-1]
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(pattern.replace("{timestamp}", stamp))


def _baseline(recipe: Recipe, task: Task, model: nn.Module, loaders: Any, out: Path,
              resume: bool, meter: MemoryMeter) -> tuple[float | None, StageRecord | None]:
    """Train the baseline (or use the loaded checkpoint); return its primary metric in PyTorch
    and a record of the training."""
    metric = task.primary_metric
    if recipe.model.checkpoint is not None or recipe.train is None:
        return task.evaluate(model, loaders.val)[metric], None
    res = fit(model, loaders.train, loaders.val, recipe.train, out / "checkpoints" / "baseline",
              resume, desc="baseline", objective=task.objective)
    save_torch(make_checkpoint(model, meta={"recipe": recipe.name}), out / "baseline.pt")
    rec = StageRecord("train", recipe.train.model_dump(mode="json"),
                      {f"val_{metric}": res.final, "epochs": recipe.train.epochs},
                      res.seconds, round(meter.peak_gb, 2))
    return res.final, rec


def _run_stages(modules: Sequence[ModuleType], specs: Sequence[StageSpec], state: PipelineState,
                loaders: Any, meter: MemoryMeter, after_stage: AfterStage | None = None
                ) -> PipelineState:
    """``module.run(state, loaders, spec)`` for each stage, in order; record the process's
    peak resident memory on the records each adds and log its time; ``after_stage(i, state)``
    runs after stage ``i`` (it may raise to stop the run early)."""
    for i, (module, spec) in enumerate(zip(modules, specs, strict=True)):
        t0, done = time.perf_counter(), len(state.history)
        log(f"stage {spec.kind}")
        meter.start(f"stage {spec.kind}")
        state = module.run(state, loaders, spec)
        for record in state.history[done:]:
            record.peak_rss_gb = round(max(meter.peak_gb, meter.sample()), 2)
        log(f"stage {spec.kind} done in {time.perf_counter() - t0:.1f} s, peak resident memory "
            f"{meter.peak_gb:.2f} GiB")
        if after_stage is not None:
            after_stage(i, state)
    return state


def run(recipe: Recipe | dict | str | Path, output: str | Path | None = None,
        resume: bool = False, gate: bool = False, after_stage: AfterStage | None = None,
        model: nn.Module | None = None) -> Report | None:
    """Build, (train,) compress, export, check, measure, report and (optionally) gate.

    Args:
        recipe: a recipe file's path, a recipe as a dict (as the YAML would hold it), or a
            validated :class:`~deploykit.recipe.Recipe`.
        output: the run folder (default: the recipe's ``output`` pattern).
        resume: continue an interrupted run from its checkpoints.
        gate: check the recipe's ``gates:`` on the report, as ``deploykit run`` does: the
            checks are printed, written to ``gate.xml`` and stored in ``report.gate``.
        after_stage: called as ``after_stage(i, state)`` after stage ``i`` (``deploykit
            tune`` stops a hopeless trial there by raising).
        model: your model, in memory, instead of the one the recipe's ``model`` section
            builds (that section still gives ``num_classes`` and, if set, the checkpoint
            loaded into it). deploykit works on a copy; your module is left as it was.

    Returns:
        The report, also written to the run folder (see ``deploykit.report.REPORT_FILES``);
        ``None`` on a torchrun worker (rank > 0), which trains but does not measure.

    Raises:
        DeployKitError: any user-fixable problem, raised before long work where possible.

    Example:
        >>> recipe = load_recipe("recipes/quickstart.yaml")  # doctest: +SKIP
        >>> report = run(recipe, "runs/qs", gate=True)  # doctest: +SKIP
        >>> report.gate["passed"]  # doctest: +SKIP
        True
    """
    recipe = as_recipe(recipe)
    check_runtimes(recipe, f"recipe {recipe.name!r}")   # a missing GPU: now, writing nothing
    out = resolve_output_dir(recipe, output, resume)
    out.mkdir(parents=True, exist_ok=True)
    limit = memory_limit_gb(recipe)
    artifacts = recipe_hash(recipe, ARTIFACT_SECTIONS)
    main = distributed.is_main()   # torchrun: rank 0 holds the lock and writes the records
    model_name = f"{recipe.model.source}:{recipe.model.name}"
    with (run_lock(out) if main else contextlib.nullcontext(),
          memory_watchdog(limit, model=model_name) as meter):
        if main:
            check_run_record(out, recipe.name, artifacts, resume)
            write_run_record(out, recipe.name, artifacts)
        report = _run(recipe, out, resume, gate, limit, meter, after_stage, model)
        if report is not None:   # last: the mark of a finished run
            write_manifest(out, recipe_hash(recipe), [s.kind for s in recipe.stages])
        return report


def as_recipe(recipe: Recipe | dict | str | Path) -> Recipe:
    """A validated recipe from a recipe file's path, a dict or a :class:`Recipe`.

    Raises:
        RecipeError: the file or the dict is not a valid recipe, or ``recipe`` is none of
            these.
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str | Path):
        return load_recipe(recipe)
    if isinstance(recipe, dict):
        return parse_recipe(recipe, "recipe (a dict)")
    raise RecipeError(f"a recipe is a path to a YAML file, a dict or a deploykit Recipe, not "
                      f"{type(recipe).__name__}")


def preflight(recipe: Recipe, limit_gb: float | None = None, model: nn.Module | None = None
              ) -> tuple[Task, TaskModel, list[ModuleType]]:
    """Every check of a recipe short of its data and training: build the model (or take
    ``model``), check it fits the recipe (and ``limit_gb`` of memory), the task takes every
    stage, and each stage's settings fit the model (torch-pruning traces it). ``deploykit
    inspect`` runs it too.

    Returns:
        The task, the model as built and the stage drivers.

    Raises:
        DeployKitError: the first problem, naming the key and the fix.
    """
    task = get_task(recipe.task)
    built = task.build_model(recipe, model=model)
    task.check_model(built, recipe, limit_gb)
    unfit = [s.kind for s in recipe.stages if s.kind not in task.stage_kinds]
    if unfit:
        raise RecipeError(f"recipe {recipe.name!r}: stages: {unfit[0]} does not run on task "
                          f"{task.name!r}; it takes {', '.join(task.stage_kinds)}")
    stages = [get_stage(s.kind) for s in recipe.stages]
    for module, spec in zip(stages, recipe.stages, strict=True):  # fail before any training
        if hasattr(module, "check"):
            module.check(built.model, spec, built.first_last, built.input_shape, task)
    return task, built, stages


def _run(recipe: Recipe, out: Path, resume: bool, gate: bool, limit: float | None,
         meter: MemoryMeter, after_stage: AfterStage | None,
         user_model: nn.Module | None = None) -> Report | None:
    gates = recipe.gates if gate else None
    gate_baseline = None if gates is None else load_baseline(gates)
    seed_everything(recipe.seed)
    task, built, stages = preflight(recipe, limit, user_model)
    model, first_last, shape = built.model, built.first_last, built.input_shape
    loaders = task.loaders(recipe)

    meter.start("baseline training")
    baseline_value, train_record = _baseline(recipe, task, model, loaders, out, resume, meter)
    state = PipelineState.start(model, first_last, shape, out, resume, baseline_value)
    state.recipe, state.task = recipe, task
    if train_record is not None:
        state.history.append(train_record)
    state = _run_stages(stages, recipe.stages, state, loaders, meter, after_stage)
    meter.start("measurement (export, parity, metrics, latency)")

    if not distributed.is_main():   # torchrun workers only train; rank 0 measures
        distributed.barrier()
        return None
    yardstick = yardstick_ms(recipe.bench.threads)   # the machine's speed, before and after
    candidates = measure_candidates(state.candidates, loaders, recipe, out, task)
    yardstick = (yardstick + yardstick_ms(recipe.bench.threads)) / 2
    metric = task.primary_metric
    for cand, rep in zip(state.candidates, candidates, strict=True):
        if cand.torch_top1_pct is not None and "torch-cpu" not in rep.metrics.get(metric, {}):
            rep.metrics.setdefault(metric, {})["torch-cpu"] = cand.torch_top1_pct
    report = Report(recipe_name=recipe.name, recipe_hash=recipe_hash(recipe), seed=recipe.seed,
                    created_utc=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    environment={**environment(recipe.bench.threads),
                                 "yardstick_ms": round(yardstick, 4)},
                    recipe=recipe_to_dict(recipe),
                    stages=[vars(r) for r in state.history], candidates=candidates,
                    task=task.name, primary_metric=metric)
    report.recommendation = int8_recommendation(report)
    if gates is not None:
        report.gate = apply_gate(report, gates, gate_baseline, out / "gate.xml", out).to_dict()
    write_report_files(report, out)
    distributed.barrier()
    return report


@dataclass(frozen=True)
class ExportResult:
    """An exported model file and its parity against PyTorch."""

    path: Path
    parity: ParityResult
    untrained: bool = False   # no checkpoint: the model's initial weights were exported


UNTRAINED_NOTE = ("untrained: exported without model.checkpoint or --checkpoint, so these are "
                  "the model's initial weights")


def export_model(recipe: Recipe, output: str | Path, checkpoint: str | Path | None = None
                 ) -> ExportResult:
    """Export the recipe's model (with ``checkpoint``, default ``model.checkpoint``) to ONNX and
    check it against PyTorch on random inputs: the ``deploykit export`` command.

    Raises:
        DeployKitError: the model cannot be built or loaded, the export or its parity fails.
    """
    shape = (3, recipe.data.image_size, recipe.data.image_size)
    model, _ = load_model(recipe.model, shape, checkpoint)
    untrained = checkpoint is None and recipe.model.checkpoint is None
    if untrained:
        log(f"warning: {recipe.name}: no model.checkpoint and no --checkpoint: exporting the "
            "model's initial weights (random, not trained); the file's metadata says so")
    spec = recipe.export.onnx
    path = export_onnx(model, shape, output, spec.opset, spec.dynamic_batch,
                       metadata={"deploykit.weights": UNTRAINED_NOTE} if untrained else None)
    x = torch.randn(8, *shape).numpy()
    parity = check_parity(TorchRunner(model), OrtRunner(path), [x], what=str(path),
                          **spec.parity.thresholds("fp32"))
    return ExportResult(path, parity, untrained)
