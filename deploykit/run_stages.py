"""The stage loop both pipelines share: run each stage in order, record the process's peak
resident memory on the records it adds, and log its time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from deploykit.progress import log
from deploykit.recipe import StageSpec
from deploykit.resources import MemoryMeter
from deploykit.state import PipelineState

__all__ = ["AfterStage", "run_stages"]

AfterStage = Callable[[int, PipelineState], None]


def run_stages(modules: Sequence[ModuleType], specs: Sequence[StageSpec], state: PipelineState,
               loaders: Any, meter: MemoryMeter,
               after_stage: AfterStage | None = None
               ) -> PipelineState:
    """``module.run(state, loaders, spec)`` for each stage, in order; returns the last state.
    ``after_stage(i, state)`` runs after stage ``i`` (it may raise to stop the run early)."""
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
