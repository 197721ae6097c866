"""The distill stage: the model before compression teaches the compressed one back to accuracy.

The student is the current model (after prune or lowrank); the teacher is, by default, the
frozen baseline, or the recipe's checkpoint(s). The loss is the task's
(:meth:`deploykit.tasks.Task.distill_loss`): a classifier's Hinton KD and feature terms, a
detector's Chen et al. terms. Training goes through the shared loop (``train.fit``):
checkpoints each epoch, ``--resume``, best validation weights kept, gradient all-reduce under
torchrun. Adapters live only during training; the candidate is the student.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from torch import nn

from deploykit.errors import RecipeError
from deploykit.host.progress import log
from deploykit.recipe import DistillSpec
from deploykit.recipe.stages import stage_candidates
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.tasks import task_of
from deploykit.train import fit

__all__ = ["run"]


def _teacher_models(state: PipelineState, spec: DistillSpec) -> list[nn.Module]:
    """The baseline, or the recipe's teacher checkpoints (built at ``teacher.image_size``)."""
    if not spec.teacher.checkpoints:
        return [state.baseline]
    recipe = state.recipe
    if recipe is None:
        raise RecipeError("distill: teacher checkpoints need the recipe (its model section)")
    if spec.teacher.image_size is not None:
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(
            update={"image_size": spec.teacher.image_size})})
    return [task_of(state).build_model(recipe, path).model for path in spec.teacher.checkpoints]


def run(state: PipelineState, loaders: Any, spec: DistillSpec) -> PipelineState:
    """Train a copy of ``state.model`` against the teacher; add it as a candidate."""
    t0 = time.perf_counter()
    prev = state.candidates[-1]
    task = task_of(state)
    metric = task.primary_metric
    stem = metric.removesuffix("_pct")
    student = copy.deepcopy(state.model)
    dl = task.distill_loss(student, _teacher_models(state, spec), spec, loaders)
    for note in dl.notes:
        log(f"distill: {note}")
    before = prev.torch_top1_pct
    if before is None:
        before = task.evaluate(student, loaders.val)[metric]
    index = sum(1 for r in state.history if r.name == "distill")
    res = fit(student, loaders.train, loaders.val, spec.train,
              state.output_dir / "checkpoints" / f"distill{index}", state.resume,
              loss_fn=dl.loss, desc=f"distill ({', '.join(dl.terms) or spec.mode})",
              keep_best=True, extra_modules=dl.modules, objective=task.objective)
    teacher = state.candidates[0].torch_top1_pct if not spec.teacher.checkpoints else None
    metrics = {f"val_{metric}": res.final, f"best_val_{metric}": res.best,
               f"student_{stem}_before_pct": before, f"teacher_{stem}_pct": teacher,
               "epochs": res.epochs_run, "seconds_per_epoch":
               res.seconds / res.epochs_run if res.epochs_run else None,
               "terms": list(dl.terms), **(dl.metrics or {}), "history": res.history}
    state.history.append(StageRecord("distill", spec.model_dump(mode="json"), metrics,
                                     time.perf_counter() - t0))
    name = stage_candidates(spec, prev.name)[-1]
    state.add_candidate(Candidate(name, student, torch_top1_pct=res.final, arch=dict(prev.arch)))
    log(f"distill: {metric} {before:.2f} -> {res.final:.2f}"
        + (f" (teacher {teacher:.2f})" if teacher is not None else ""))
    return state
