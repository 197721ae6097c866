"""Run a ``deploykit tune`` study: the baseline once, then Optuna trials, each a plain recipe
run (compress, export, parity, measure) scored on the accuracy drop of its exported artifact
and its latency over the baseline's, both measured in that trial's own run.

The study lives in an Optuna storage: by default a SQLite file in the output folder, so a
killed study continues from its stored trials; ``--storage postgresql://...`` lets workers on
several machines join the same study by name. A trial whose parameters were already measured
(the same config hash) is not run again: it takes the stored point. A point is feasible when
it meets ``tune.constraints`` and, if its last candidate is INT8, that artifact is faster than
its float twin; only feasible points make the front.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.bench.probe import LatencyProbe
from deploykit.errors import DeployKitError, RecipeError
from deploykit.host.progress import log
from deploykit.pipeline import AfterStage, run
from deploykit.recipe import Recipe, parse_recipe, recipe_to_dict, runtime_info
from deploykit.report import Report, float_twin
from deploykit.runtimes import check_runtimes
from deploykit.tune.space import SearchSpace, config_hash

__all__ = ["TrialPoint", "baseline_checkpoint", "check_tune", "point_from_report", "run_study"]

OBJECTIVES = ("accuracy_drop", "latency_ratio")
EARLY_STOP_MARGIN = 0.1   # timing noise allowed before a trial is stopped early


@dataclass
class TrialPoint:
    """What one trial measured (see :func:`point_from_report`)."""

    accuracy_drop: float
    latency_ratio: float
    size_mb: float
    macs_ratio: float
    accuracy: float
    int8_not_faster: bool
    candidate: str
    int8_gain: float | None = None   # the INT8 artifact's latency over its float twin's

    def constraints(self, recipe: Recipe) -> dict[str, float]:
        """Optuna's constraint values by name: <= 0 where met."""
        c = recipe.tune.constraints
        out = {"int8_faster_than_float": 1.0 if self.int8_not_faster else -1.0}
        for name, bound, value in (("max_accuracy_drop", c.max_accuracy_drop,
                                    self.accuracy_drop),
                                   ("max_latency_ratio", c.max_latency_ratio,
                                    self.latency_ratio),
                                   ("max_size_mb", c.max_size_mb, self.size_mb)):
            if bound is not None:
                out[name] = value - bound
        return out


def check_tune(recipe: Recipe, source: str) -> SearchSpace:
    """Everything checkable before any training: the space, and a latency objective the
    recipe's bench section measures.

    Raises:
        RecipeError: naming the key to fix.
        BackendUnavailableError: a runtime the recipe names cannot run here.
    """
    space = SearchSpace.from_recipe(recipe, source)
    lat = recipe.tune.latency
    if lat.runtime not in recipe.bench.runtimes or lat.batch not in recipe.bench.batch_sizes:
        raise RecipeError(f"{source}: tune.latency: {lat.runtime} at batch {lat.batch} is not "
                          f"measured by this recipe (bench.runtimes {recipe.bench.runtimes}, "
                          f"bench.batch_sizes {recipe.bench.batch_sizes}); add it there")
    if not recipe.stages:
        raise RecipeError(f"{source}: stages: empty; tune searches the settings of a chain "
                          "of stages (prune, distill, quantize, lowrank)")
    if any(st.kind == "quantize" for st in recipe.stages) and \
            not runtime_info(lat.runtime).int8_native:
        raise RecipeError(f"{source}: tune.latency.runtime {lat.runtime}: the chain ends in "
                          f"an INT8 candidate, and {lat.runtime} runs INT8 as its float "
                          "fake-quant simulation, whose latency is not reported; measure on a "
                          "runtime with INT8 kernels (onnxruntime-cpu, tensorrt)")
    check_runtimes(recipe, source)   # a missing GPU: found before the baseline is trained
    return space


def point_from_report(report: Report, recipe: Recipe) -> TrialPoint:
    """The last candidate against the baseline, both measured in the same run."""
    lat = recipe.tune.latency
    base, last = report.candidates[0], report.candidates[-1]

    def acc(c: Any) -> float:
        v = c.artifact(report.primary_metric)
        if v is None:
            raise DeployKitError(f"candidate {c.name} has no accuracy of its exported artifact")
        return float(v)

    def p50(c: Any) -> float:
        rec = c.latency_at(lat.runtime, lat.batch)
        if rec is None:
            raise DeployKitError(f"candidate {c.name} was not timed on {lat.runtime} at batch "
                                 f"{lat.batch}")
        return rec.p50_ms

    int8_slow, gain = False, None
    if last.precision == "int8":
        twin = float_twin(report, len(report.candidates) - 1)
        if twin is not None:
            gain = p50(last) / p50(twin)
            int8_slow = gain >= 1.0
    return TrialPoint(accuracy_drop=acc(base) - acc(last), latency_ratio=p50(last) / p50(base),
                      size_mb=(last.onnx_size_bytes or 0) / 1e6,
                      macs_ratio=last.macs / base.macs if base.macs else 1.0,
                      accuracy=acc(last), int8_not_faster=int8_slow, candidate=last.name,
                      int8_gain=gain)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Block until this process holds ``path``'s lock (workers sharing one output folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def baseline_checkpoint(recipe: Recipe, out: Path) -> Path | None:
    """The checkpoint every trial starts from: the recipe's ``model.checkpoint``, or the
    baseline trained once into ``out/baseline`` (workers on one folder train it once)."""
    if recipe.model.checkpoint is not None:
        return Path(recipe.model.checkpoint).resolve()
    if recipe.train is None:
        return None
    folder = out / "baseline"
    with _exclusive(out / "baseline.lock"):
        if not (folder / "manifest.json").is_file():
            log(f"tune: training the baseline once, into {folder}")
            data = recipe_to_dict(recipe)
            data.update(stages=[], tune=None, gates=None)
            run(parse_recipe(data, "tune baseline"), folder, resume=folder.is_dir())
    return (folder / "baseline.pt").resolve()


def _early_stop(recipe: Recipe, trial_recipe: Recipe, study: Any, trial: Any, workdir: Path
                ) -> AfterStage | None:
    """A hook that prunes a hopeless trial after its last prune/lowrank stage, before any
    recovery training: when its float latency over the baseline's, times the best INT8 gain
    measured so far in the study (if INT8 follows), is above ``max_latency_ratio`` by more
    than the timing noise. Classifiers only (a detector's latency needs its full export)."""
    import optuna

    bound = recipe.tune.constraints.max_latency_ratio
    kinds = [st.kind for st in trial_recipe.stages]
    arch = [i for i, k in enumerate(kinds) if k in ("prune", "lowrank")]
    if bound is None or recipe.task != "classification" or not arch:
        return None
    at, lat = arch[-1], recipe.tune.latency

    def hook(i: int, state: Any) -> None:
        if i != at:
            return
        gain = 1.0
        if "quantize" in kinds[at + 1:]:
            gains = [t.user_attrs["point"]["int8_gain"] for t in study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if (t.user_attrs.get("point") or {}).get("int8_gain")]
            if not gains:            # no INT8 measured yet: nothing to bound it with
                return
            gain = min(gains)
        workdir.mkdir(parents=True, exist_ok=True)
        ratio = LatencyProbe(state.baseline, state.input_shape, lat.runtime, lat.batch,
                             recipe.bench.threads, workdir).ratio(state.model)
        trial.set_user_attr("early_latency_ratio", ratio)
        if ratio * gain > bound * (1 + EARLY_STOP_MARGIN):
            why = (f"after {kinds[at]}: float latency x{ratio:.3f} of the baseline"
                   + (f", x{ratio * gain:.3f} with the best INT8 gain so far" if gain < 1
                      else "") + f", above max_latency_ratio {bound}; stopped before recovery")
            trial.set_user_attr("pruned_reason", why)
            raise optuna.TrialPruned(why)

    return hook


def run_study(recipe: Recipe, space: SearchSpace, out: Path, trials: int,
              storage: str | None = None, study_name: str | None = None
              ) -> tuple[Any, Path | None]:
    """Run trials until the study holds ``trials`` finished ones; return the Optuna study and
    the baseline checkpoint the trials start from.

    Raises:
        RecipeError: Optuna is not installed, or the storage cannot be opened.
    """
    try:
        import optuna
    except ImportError:
        raise RecipeError('deploykit tune needs Optuna: pip install "deploykit[tune]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    if url.startswith(("postgresql://", "postgres://")):   # the driver deploykit[tune] brings
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    name = study_name or recipe.name
    tune = recipe.tune
    ckpt = baseline_checkpoint(recipe, out)

    seed = (recipe.seed * 1_000_003 + os.getpid()) % 2**31   # workers must not propose alike
    sampler = (optuna.samplers.NSGAIISampler(population_size=max(2, tune.startup_trials),
                                             seed=seed)
               if tune.sampler == "nsga2" else
               optuna.samplers.TPESampler(n_startup_trials=tune.startup_trials, seed=seed,
                                          multivariate=True))
    try:   # workers starting together create the tables and the study once, in turn
        with _exclusive(out / "study.lock"):
            for attempt in range(3):
                try:
                    rdb = optuna.storages.RDBStorage(url, heartbeat_interval=30,
                                                     grace_period=120,
                                                     engine_kwargs=_engine_kwargs(url))
                    study = optuna.create_study(storage=rdb, study_name=name,
                                                sampler=sampler, load_if_exists=True,
                                                directions=["minimize", "minimize"])
                    break
                except Exception:
                    if attempt == 2:   # another machine creating the same tables: retry
                        raise
                    time.sleep(2.0)
    except Exception as e:   # a bad URL, a missing driver, a server that does not answer
        raise RecipeError(f"--storage {url}: Optuna cannot open it ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]}); for PostgreSQL: pip install "
                          '"deploykit[tune]" (the psycopg driver), check the URL and that the '
                          "server accepts connections") from None
    study.set_user_attr("objectives", list(OBJECTIVES))
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    if done >= trials:
        log(f"tune: study {name!r} already holds {done} finished trials (--trials {trials})")
        return study, ckpt
    log(f"tune: study {name!r} in {url.split('@')[-1]} (seed {seed}): {done} finished, up to "
        f"{trials - done} more")

    def objective(trial: Any) -> tuple[float, float]:
        params = space.suggest(trial)
        h = config_hash(params)
        trial.set_user_attr("config_hash", h)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("params", params)
        for t in study.get_trials(deepcopy=False):
            if t.number == trial.number or t.user_attrs.get("config_hash") != h:
                continue
            if t.state == optuna.trial.TrialState.COMPLETE:
                for k in ("point", "constraints", "trial_dir", "gate_passed"):
                    trial.set_user_attr(k, t.user_attrs.get(k))
                for k, v in (t.user_attrs.get("constraints") or {}).items():
                    trial.set_constraint(k, v)
                trial.set_user_attr("duplicate_of", t.number)
                return tuple(t.values)
            if t.state == optuna.trial.TrialState.RUNNING:
                why = f"the same settings are being measured by trial {t.number}"
                trial.set_user_attr("pruned_reason", why)
                raise optuna.TrialPruned(why)
        folder = out / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("trial_dir", str(folder))
        t0 = time.perf_counter()
        trial_recipe = space.trial_recipe(params, ckpt, f"{recipe.name}-trial{trial.number}")
        report = run(trial_recipe, folder, gate=recipe.gates is not None,
                     after_stage=_early_stop(recipe, trial_recipe, study, trial,
                                             folder / "early-stop"))
        point = point_from_report(report, recipe)
        trial.set_user_attr("point", vars(point))
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        trial.set_user_attr("gate_passed", None if report.gate is None
                            else bool(report.gate["passed"]))
        constraints = point.constraints(recipe)
        trial.set_user_attr("constraints", constraints)
        for k, v in constraints.items():
            trial.set_constraint(k, v)
        return point.accuracy_drop, point.latency_ratio

    def progress(study: Any, t: Any) -> None:
        from deploykit.tune.results import front_numbers, is_feasible

        params = json.dumps(t.user_attrs.get("params", {}), default=str)
        point = t.user_attrs.get("point")
        if t.state != optuna.trial.TrialState.COMPLETE or point is None:
            why = t.user_attrs.get("pruned_reason") or t.system_attrs.get("fail_reason", "")
            log(f"trial {t.number}: {t.state.name.lower()} {params}"
                + (f": {str(why).splitlines()[0][:200]}" if why else ""))
            return
        on_front = t.number in front_numbers(study, t)
        feasible = is_feasible(t)
        dup = t.user_attrs.get("duplicate_of")
        log(f"trial {t.number}: {params} -> latency x{point['latency_ratio']:.3f} of baseline, "
            f"accuracy {-point['accuracy_drop']:+.2f} pts"
            + ("" if feasible else " (infeasible" + (": INT8 not faster than float"
                                                      if point["int8_not_faster"] else "") + ")")
            + (" [front]" if on_front else "") + (f" (as trial {dup})" if dup is not None
                                                  else ""))

    study.optimize(objective, n_trials=trials - done, catch=(DeployKitError,),
                   callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished),
                              progress])
    return study, ckpt


def _engine_kwargs(url: str) -> dict[str, Any]:
    """SQLite: wait for a worker's write lock instead of failing at once."""
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
