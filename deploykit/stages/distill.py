"""The distill stage: the model before compression teaches the compressed one back to accuracy.

The student is the current model (after prune or lowrank); the teacher is, by default, the
frozen baseline, or the recipe's checkpoint(s). Training goes through the shared loop
(``train.fit``): checkpoints each epoch, ``--resume``, best validation weights kept, gradient
all-reduce under torchrun. Adapters live only during training; the candidate is the student.
"""

from __future__ import annotations

import copy
import time

from torch import nn

from deploykit.data import Loaders
from deploykit.distill import DistillObjective, Teacher, resolve_taps
from deploykit.errors import RecipeError
from deploykit.host.progress import log
from deploykit.recipe import DistillSpec
from deploykit.recipe.stages import stage_candidates
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.tasks import task_of
from deploykit.tasks.restore import load_model
from deploykit.train import fit

__all__ = ["check", "run"]


def check(model: nn.Module, spec: DistillSpec, first_last: tuple[str, str],
          input_shape: tuple[int, int, int] | None = None) -> None:
    """Fail before training when a tap does not exist on the (uncompressed) model."""
    if spec.losses.feature_terms():
        resolve_taps(model, spec.taps or None)
        if spec.hint_tap:
            resolve_taps(model, [spec.hint_tap])


def _teacher_models(state: PipelineState, spec: DistillSpec) -> list[nn.Module]:
    if not spec.teacher.checkpoints:
        return [state.baseline]
    if state.model_spec is None:
        raise RecipeError("distill: teacher checkpoints need the recipe's model section")
    size = spec.teacher.image_size
    shape = (state.input_shape[0], size or state.input_shape[1], size or state.input_shape[2])
    return [load_model(state.model_spec, shape, path)[0] for path in spec.teacher.checkpoints]


def build_objective(student: nn.Module, teacher: Teacher, spec: DistillSpec,
                    loaders: Loaders, seed: int = 0) -> DistillObjective:
    """The stage's loss with adapters sized from one training batch."""
    example = next(iter(loaders.train))[0][:2]
    return DistillObjective(student, teacher, spec, example, seed)


def run(state: PipelineState, loaders: Loaders, spec: DistillSpec) -> PipelineState:
    """Train a copy of ``state.model`` against the teacher; add it as a candidate."""
    t0 = time.perf_counter()
    prev = state.candidates[-1]
    student = copy.deepcopy(state.model)
    teacher = Teacher(_teacher_models(state, spec), spec.teacher.image_size,
                      spec.teacher.bn_train)
    objective = build_objective(student, teacher, spec, loaders)
    for note in objective.notes:
        log(f"distill: {note}")
    task = task_of(state)
    before = prev.torch_top1_pct
    if before is None:
        before = task.evaluate(student, loaders.val)[task.primary_metric]
    index = sum(1 for r in state.history if r.name == "distill")
    res = fit(student, loaders.train, loaders.val, spec.train,
              state.output_dir / "checkpoints" / f"distill{index}", state.resume,
              loss_fn=objective.loss, desc=f"distill ({spec.mode})", keep_best=True,
              extra_modules=objective, objective=task.objective)
    top1 = res.final
    teacher_top1 = state.candidates[0].torch_top1_pct if not spec.teacher.checkpoints else None
    metrics = {"val_top1_pct": top1, "best_val_top1_pct": res.best,
               "student_top1_before_pct": before, "teacher_top1_pct": teacher_top1,
               "epochs": res.epochs_run, "seconds_per_epoch":
               res.seconds / res.epochs_run if res.epochs_run else None,
               "terms": [k for k in ("ce", "kd", "hint", "attention", "overhaul", "fsp")
                         if getattr(spec.losses, k)],
               "taps": objective.taps, "adapter_params": sum(
                   p.numel() for p in objective.adapters.parameters()),
               "history": res.history}
    state.history.append(StageRecord("distill", spec.model_dump(mode="json"), metrics,
                                     time.perf_counter() - t0))
    name = stage_candidates(spec, prev.name)[-1]
    state.add_candidate(Candidate(name, student, torch_top1_pct=top1, arch=dict(prev.arch)))
    log(f"distill: top-1 {before:.2f}% -> {top1:.2f}%"
        + (f" (teacher {teacher_top1:.2f}%)" if teacher_top1 is not None else ""))
    return state
