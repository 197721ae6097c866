"""``deploykit tune``: search a recipe's compression chain with Optuna against latency measured
on the deployment runtime (see ``deploykit.tune.study`` and ``deploykit.tune.results``).

Example:
    >>> from deploykit.tune import tune
    >>> tune("recipes/cifar10-resnet20-tune.yaml", trials=20)  # doctest: +SKIP
    0
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["tune"]


def tune(recipe_path: str | Path, trials: int | None = None, storage: str | None = None,
         study: str | None = None, output: str | Path | None = None) -> int:
    """Run (or continue) the study of ``recipe_path``; write its results. Returns the exit
    code: 0 when the best feasible point passes the recipe's gates, 1 when no point is
    feasible or the best one fails them.

    Raises:
        RecipeError: a bad recipe, tune section or storage, before any training.
    """
    from deploykit.errors import RecipeError
    from deploykit.host.progress import log
    from deploykit.recipe import load_recipe
    from deploykit.recipe.reading import shown_path
    from deploykit.tune.results import write_results
    from deploykit.tune.study import check_tune, run_study

    recipe = load_recipe(recipe_path)
    space = check_tune(recipe, shown_path(Path(recipe_path)))
    n = trials if trials is not None else recipe.tune.trials
    if n < 1:
        raise RecipeError(f"--trials {n}: give at least 1")
    out = Path(output) if output is not None else Path("runs") / f"{recipe.name}-tune"
    st, checkpoint = run_study(recipe, space, out, n, storage, study)
    summary = write_results(st, recipe, out, space, checkpoint)
    rows = {r["number"]: r for r in summary["trials"]}
    log(f"tune: {len(rows)} trials, front: {summary['front'] or 'empty'}; results in "
        f"{out / 'tune.html'} (also tune.json, trials.csv, front/*.yaml)")
    if summary["best"] is None:
        log("tune: no trial met the constraints (tune.constraints, and INT8 faster than its "
            "float twin): nothing to recommend")
        return 1
    best = rows[summary["best"]]
    log(f"tune: best: trial {best['number']} {best['params']}: latency x"
        f"{best['latency_ratio']:.3f} of the baseline, accuracy {-best['accuracy_drop']:+.2f} "
        f"pts; reproduce it with deploykit run {best['recipe']}")
    if best.get("gate_passed") is False:
        log(f"tune: the best point fails the recipe's gates (see {best['trial_dir']}/gate.xml)")
        return 1
    return 0
