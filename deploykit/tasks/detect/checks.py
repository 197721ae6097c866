"""Detection's recipe checks: what the detector path does not do, and what in a recipe
belongs to a classifier. Plain functions of the typed recipe (no model, no torch), so the
recipe loader runs them as it validates."""

from __future__ import annotations

from typing import Any

__all__ = ["DATA_KINDS", "STAGE_KINDS", "recipe_problems"]

DATA_KINDS = ("shapes", "coco")
STAGE_KINDS = ("prune", "distill", "quantize")


def recipe_problems(recipe: Any) -> list[str]:
    """What in ``recipe`` a detector cannot run, each as ``"<key>: <why and the fix>"``."""
    problems = []
    if recipe.data.kind not in DATA_KINDS:
        problems.append(f"data.kind {recipe.data.kind!r} does not fit task 'detection': a "
                        "detector takes data.kind shapes or coco (classification takes "
                        "digits, imagefolder or synthetic)")
    if recipe.model.source not in ("torchvision", "factory"):
        problems.append(f"model.source {recipe.model.source!r}: a detector comes from "
                        "torchvision (e.g. name: ssdlite320_mobilenet_v3_large) or from your "
                        "factory")
    if recipe.model.weights is not None:
        problems.append("model.weights: starting a detector from pretrained weights is not "
                        "built yet; give a trained detector as model.checkpoint")
    if recipe.bench.batch_sizes != [1]:
        problems.append("bench.batch_sizes: a detector is timed at batch 1 (the end-to-end "
                        "graph takes one image); set bench.batch_sizes: [1]")
    if recipe.export.onnx.opset < 18:
        problems.append("export.onnx.opset: a detector's network is exported with the dynamo "
                        "exporter (opset 18 or newer); set export.onnx.opset: 18")
    for i, st in enumerate(recipe.stages):
        problems += _stage_problems(i, st)
    g = recipe.gates
    if g is not None and g.max_accuracy_drop is not None:
        problems.append("gates.max_accuracy_drop is top-1; a detector is gated on mAP: use "
                        "gates.max_map_drop")
    return problems


def _stage_problems(i: int, st: Any) -> list[str]:
    at = f"stages[{i}]"
    if st.kind not in STAGE_KINDS:
        return [f"{at}.kind {st.kind!r} does not run on detectors yet; detection recipes "
                f"take: {', '.join(STAGE_KINDS)}"]
    if st.kind == "prune" and (st.target.latency_ratio is not None or st.sparsity is not None
                               or st.importance in ("taylor", "bn_scale", "group_norm")):
        return [f"{at}: prune on a detector: use target.ratio or target.macs_ratio with "
                "importance l1, l2 or random (latency targets, sparsity training and gradient "
                "or BatchNorm criteria are classifier-only for now)"]
    if st.kind == "quantize":
        if st.max_accuracy_drop is not None:
            return [f"{at}.max_accuracy_drop is top-1; a detector falls back on mAP: use "
                    "max_map_drop"]
        if st.fp16 or "speed_check" in st.model_fields_set:
            return [f"{at}.fp16 and speed_check are classifier settings; a detector's INT8 "
                    "artifact is timed against its float twin in every run"]
        if st.sensitivity is not None and st.sensitivity.metric != "sqnr":
            return [f"{at}.sensitivity.metric: a detector's layers are ranked by the SQNR of "
                    "the network's outputs (metric: sqnr); mAP drives the float fallback"]
        return []
    if st.kind != "distill":
        return []
    problems = []
    w = st.losses
    if w.feature_terms() or {"ce", "kd"} & w.model_fields_set:
        problems.append(f"{at}.losses: ce, kd, hint, attention, overhaul and fsp are "
                        "classifier terms; a detector distils with det_soft_ce, "
                        "det_bounded_reg and det_hint (its own detection loss is always on)")
    if st.mode != "standard":
        problems.append(f"{at}.mode: distill on a detector: mode function_matching is for "
                        "classifiers; use mode: standard with det_soft_ce, det_bounded_reg, "
                        "det_hint")
    if st.teacher.image_size is not None or len(st.teacher.checkpoints) > 1:
        problems.append(f"{at}.teacher: distill on a detector: the teacher must see the "
                        "student's images (no teacher.image_size) and be one model (one "
                        "checkpoint at most)")
    return problems
