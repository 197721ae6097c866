"""What a report concludes beyond its numbers: each INT8 candidate's float twin, whether INT8
pays on the runtimes that run it as integer kernels, and whether each step made the artifact
smaller and faster."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.recipe import RUNTIME_TABLE

if TYPE_CHECKING:
    from deploykit.report.model import CandidateReport, Report

__all__ = ["float_twin", "int8_recommendation", "step_verdicts"]

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


def step_verdicts(r: Report) -> list[str]:
    """Per compressed candidate, whether its deployed artifact is actually smaller and faster
    (ONNX Runtime CPU, batch 1, end to end) than the candidate before it, said plainly when it
    is not."""
    lines = []
    for i, c in enumerate(r.candidates[1:], 1):
        prev = r.candidates[i - 1]
        size = (c.onnx_size_bytes or 0) < (prev.onnx_size_bytes or 0)
        a, b = c.latency_at("onnxruntime-cpu", 1), prev.latency_at("onnxruntime-cpu", 1)
        if a is None or b is None:
            lines.append(f"{c.name}: {'smaller' if size else 'NOT smaller'} than {prev.name}; "
                         "latency not measured")
            continue
        faster = a.p50_ms < b.p50_ms
        lines.append(f"{c.name}: {'smaller' if size else 'NOT smaller'} and "
                     f"{'faster' if faster else 'NOT faster'} end to end than {prev.name} "
                     f"({(c.onnx_size_bytes or 0) / 1e6:.2f} vs "
                     f"{(prev.onnx_size_bytes or 0) / 1e6:.2f} MB, p50 {a.p50_ms:.2f} vs "
                     f"{b.p50_ms:.2f} ms at batch 1)")
    return lines
