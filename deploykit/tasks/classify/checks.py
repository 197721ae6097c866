"""Classification's recipe checks: what in a recipe belongs to another task. Plain functions
of the typed recipe (no model, no torch), so the recipe loader runs them as it validates."""

from __future__ import annotations

from typing import Any

__all__ = ["DATA_KINDS", "recipe_problems"]

DATA_KINDS = ("digits", "imagefolder", "synthetic")


def recipe_problems(recipe: Any) -> list[str]:
    """What in ``recipe`` a classifier cannot run, each as ``"<key>: <why and the fix>"``."""
    problems = []
    if recipe.data.kind not in DATA_KINDS:
        problems.append(f"data.kind {recipe.data.kind!r} does not fit task {recipe.task!r}: "
                        f"a classifier takes data.kind {', '.join(DATA_KINDS)} (detection "
                        "takes shapes or coco: set task: detection)")
    if (recipe.model.width_mult, recipe.model.detections) != (None, None):
        problems.append("model.width_mult and model.detections are for detectors "
                        "(task: detection)")
    for i, st in enumerate(recipe.stages):
        if st.kind == "quantize" and st.max_map_drop is not None:
            problems.append(f"stages[{i}].max_map_drop is for detectors; use max_accuracy_drop")
        losses = getattr(st, "losses", None)
        if losses is not None and losses.detection_terms():
            problems.append(f"stages[{i}].losses: {', '.join(losses.detection_terms())} are "
                            "detection terms; set task: detection, or remove them")
    if recipe.gates is not None and recipe.gates.max_map_drop is not None:
        problems.append("gates.max_map_drop is for detectors (task: detection); use "
                        "gates.max_accuracy_drop")
    return problems
