"""The ``distill`` stage on a detector: the compressed detector trains back with its own
detection loss plus Chen et al. (2017)'s terms from the teacher (the unpruned baseline, or
the recipe's teacher checkpoint): ``det_soft_ce`` (class-weighted soft cross-entropy, mixed
with the hard loss by ``mu = 1 - det_soft_ce``), ``det_bounded_reg`` (teacher-bounded
regression) and ``det_hint`` (hint through a 1x1 adaptation layer). With no ``det_*`` weight
it is plain fine-tuning at the same budget. The best validation mAP@.5 weights are kept.
"""

from __future__ import annotations

import copy
import time

from torch import nn

from deploykit.data import Loaders
from deploykit.errors import RecipeError
from deploykit.host.progress import log
from deploykit.recipe import DistillSpec
from deploykit.recipe.stages import stage_candidates
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.tasks import task_of
from deploykit.tasks.detect.loss import (
    ChenTerms,
    check_chen_model,
    chen_loss,
    detector_loss,
    hint_adapter,
)
from deploykit.tasks.detect.metric import evaluate_detector
from deploykit.train import fit

__all__ = ["check", "chen_terms", "run"]


def chen_terms(spec: DistillSpec) -> ChenTerms:
    w = spec.losses
    return ChenTerms(mu=1.0 - w.det_soft_ce, temperature=spec.temperature,
                     background_weight=spec.background_weight,
                     bounded_weight=w.det_bounded_reg, margin=spec.margin,
                     hint_weight=w.det_hint, hint_level=spec.hint_level)


def check(model: nn.Module, spec: DistillSpec, first_last: tuple[str, str],
          input_shape: tuple[int, int, int] | None = None) -> None:
    if spec.mode != "standard":
        raise RecipeError("distill on a detector: mode function_matching is for classifiers; "
                          "use mode: standard with det_soft_ce, det_bounded_reg, det_hint")
    if spec.teacher.image_size is not None or len(spec.teacher.checkpoints) > 1:
        raise RecipeError("distill on a detector: the teacher must see the student's images "
                          "(no teacher.image_size) and be one model (one checkpoint at most)")
    if spec.losses.detection_terms():
        check_chen_model(model, "student")


def run(state: PipelineState, loaders: Loaders, spec: DistillSpec,
        teacher: nn.Module | None = None) -> PipelineState:
    """Train a copy of ``state.model`` (``teacher``: default the baseline); add a candidate."""
    t0 = time.perf_counter()
    prev = state.candidates[-1]
    student = copy.deepcopy(state.model)
    teacher = teacher if teacher is not None else state.baseline
    terms = chen_terms(spec)
    active = spec.losses.detection_terms()
    adapter = hint_adapter(student, teacher, state.input_shape[1], terms.hint_level) \
        if terms.hint_weight > 0 else None
    loss = chen_loss(teacher, terms, adapter) if active else detector_loss
    before = evaluate_detector(student, loaders.val)["map50_pct"]
    index = sum(1 for r in state.history if r.name == "distill")
    res = fit(student, loaders.train, loaders.val, spec.train,
              state.output_dir / "checkpoints" / f"distill{index}", state.resume,
              loss_fn=loss, desc=f"distill ({', '.join(active) or 'plain fine-tuning'})",
              keep_best=True, extra_modules=adapter,
              objective=task_of(state, "detection").objective)
    metrics = {"val_map50_pct": res.final, "best_val_map50_pct": res.best,
               "student_map50_before_pct": before, "terms": active or ["plain"],
               "epochs": res.epochs_run, "seconds_per_epoch":
               res.seconds / res.epochs_run if res.epochs_run else None,
               "history": res.history}
    state.history.append(StageRecord("distill", spec.model_dump(mode="json"), metrics,
                                     time.perf_counter() - t0))
    name = stage_candidates(spec, prev.name)[-1]
    state.add_candidate(Candidate(name, student, arch=dict(prev.arch)))
    log(f"distill: mAP@.5 {before:.2f} -> {res.final:.2f}")
    return state
