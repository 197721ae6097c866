"""What a report concludes beyond its numbers: each INT8 candidate's float twin, and whether
INT8 pays on the runtimes that run it as integer kernels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.recipe import RUNTIME_TABLE

if TYPE_CHECKING:
    from deploykit.report.model import CandidateReport, Report

__all__ = ["float_twin", "int8_recommendation"]

# runtimes that run an INT8 artifact with integer kernels (torch-cpu runs its simulation)
_INT8_RUNTIMES = tuple(r.name for r in RUNTIME_TABLE if r.int8_native)


def float_twin(r: Report, i: int) -> CandidateReport | None:
    """The float32 candidate nearest before candidate ``i`` (an INT8 model's float twin)."""
    return next((t for t in reversed(r.candidates[:i]) if t.precision == "fp32"), None)


def int8_recommendation(r: Report) -> str | None:
    """When an INT8 candidate is slower than its float twin (the float32 candidate before it)
    at some measured batch on a runtime that runs INT8 natively, say so and recommend the
    twin; ``None`` when every INT8 candidate is at least as fast as its twin."""
    notes = []
    for i, c in enumerate(r.candidates):
        twin = float_twin(r, i)
        if c.precision != "int8" or twin is None:
            continue
        slower = [(lr, tw) for lr in c.latency if lr.key in _INT8_RUNTIMES
                  if (tw := twin.latency_at(lr.key, lr.batch)) is not None
                  and lr.p50_ms > tw.p50_ms]
        if slower:
            where = ", ".join(f"batch {lr.batch} on {lr.key} ({lr.p50_ms:.3f} vs "
                              f"{tw.p50_ms:.3f} ms)" for lr, tw in slower)
            notes.append(f"INT8 does not pay on this machine: {c.name} is slower than its "
                         f"float twin {twin.name} at {where}; deploy {twin.name}")
    return "; ".join(notes) or None
