"""``deploykit inspect MODEL`` for any task: the graphs the techniques work on, each with its
layers in execution order, MACs and parameters, and what happens to a layer by default
(pruning keeps its output whole; INT8 keeps it float)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.errors import ModelError
from deploykit.models.summary import ModelSummary, summarize_module
from deploykit.tasks import get_task

if TYPE_CHECKING:
    from deploykit.recipe import Recipe

__all__ = ["summarize_task_model"]

_TITLES = {"": "model", "network_": "network (backbone, neck, heads)",
           "roi_": "box head (per proposal)"}


def summarize_task_model(recipe: Recipe) -> list[ModelSummary]:
    """One summary per graph of ``recipe``'s model (random weights) as its task builds and
    divides it: a classifier whole, a detector's network and, on a two-stage detector, its
    box head.

    Raises:
        ModelError: the model cannot be built, traced or matched by ``keep_float``.
    """
    task = get_task(recipe.task)
    built = task.build_model(recipe)
    size = "x".join(map(str, built.input_shape[1:]))
    graphs = task.graphs(built.model, built.input_shape, built.first_last)
    quant, remark = None, ""
    if "quantize" in task.stage_kinds:
        try:
            quant = task.quant_graph(built.model, built.input_shape, built.first_last)
        except ModelError as e:   # e.g. a two-stage detector: INT8 not built for it
            remark = f"INT8: {e}"
    floats = set(quant.keep_float(["first", "last"])) if quant is not None else set()
    out = []
    for g in graphs:
        notes = {name: "output kept whole by pruning" for name in g.keep_whole}
        if quant is not None and type(g.module) is type(quant.module):
            for name in floats:
                notes[name] = "; ".join(filter(None, (notes.get(name), "float in INT8")))
        where = (f"at {size}" if g.input_shape == built.input_shape
                 else "input " + "x".join(map(str, g.input_shape)))
        title = f"{recipe.model.name}: {_TITLES.get(g.prefix, g.prefix.rstrip('_'))} {where}"
        out.append(summarize_module(g.module, g.input_shape, title, notes, g.runs_per_input,
                                    remark if g is graphs[-1] else ""))
    return out
