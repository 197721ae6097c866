"""What a report concludes beyond its numbers: the candidate to ship, each INT8 candidate's
float twin, whether INT8 pays on the runtimes that run it as integer kernels, and whether each
candidate is smaller and faster than what it replaces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from deploykit.recipe import RUNTIME_TABLE
from deploykit.report.format import metric_label

if TYPE_CHECKING:
    from deploykit.report.model import CandidateReport, Report

__all__ = ["DEFAULT_BOUND_PTS", "FastestRuntime", "fastest_runtimes", "float_twin",
           "int8_recommendation", "intermediate", "ship_verdict", "step_verdicts"]

# runtimes that run an INT8 artifact with integer kernels (torch-cpu runs its simulation)
_INT8_RUNTIMES = tuple(r.name for r in RUNTIME_TABLE if r.int8_native)
DEFAULT_BOUND_PTS = 1.0   # the accuracy bound of the verdict when the recipe gates none


def intermediate(r: Report) -> set[str]:
    """Candidates a later distill stage recovers (``prune`` before ``prune+distill``): steps on
    the way, which a user would not ship."""
    names = {c.name for c in r.candidates}
    return {n for n in names if f"{n}+distill" in names}


def _gated_at(r: Report) -> tuple[str | None, int | None, float, str]:
    """The runtime, batch and accuracy bound the verdict judges on: the recipe's latency gate
    and accuracy gate where it has them; else a runtime with INT8 kernels (or the first
    timed), its largest batch, and :data:`DEFAULT_BOUND_PTS`."""
    gates = (r.recipe or {}).get("gates") or {}
    at = next((gates[k] for k in ("min_speedup", "max_latency_ms") if gates.get(k)), None)
    timed = [lr.key for c in r.candidates for lr in c.latency]
    runtime = (at or {}).get("runtime") or next(
        (k for k in _INT8_RUNTIMES if k in timed), timed[0] if timed else None)
    batches = sorted({lr.batch for c in r.candidates for lr in c.latency if lr.key == runtime})
    batch = (at or {}).get("batch") or (batches[-1] if batches else None)
    key = "max_map_drop" if r.primary_metric == "map50_pct" else "max_accuracy_drop"
    bound = gates.get(key)
    why = f"gates.{key}" if bound is not None else "default"
    return runtime, batch, float(DEFAULT_BOUND_PTS if bound is None else bound), why


def ship_verdict(r: Report) -> str | None:
    """One line: the candidate to ship (the fastest on the gated runtime and batch whose
    artifact is within the accuracy bound of the baseline's, steps a later stage recovers
    left out), its speed-up, accuracy change and size, and the gate's result; ``None``
    when nothing was timed."""
    runtime, batch, bound, why = _gated_at(r)
    if runtime is None or not r.candidates:
        return None
    m, base = r.primary_metric, r.candidates[0]
    skip = intermediate(r)
    fits = []
    for c in r.candidates:
        lr, delta = c.latency_at(runtime, batch), c.delta_pts.get(m, 0.0 if c is base else None)
        if c.name not in skip and lr is not None and delta is not None and delta >= -bound:
            fits.append((lr.p50_ms, c, lr, delta))
    if not fits:
        return None
    _, c, lr, delta = min(fits, key=lambda t: t[0])
    speed = f"{lr.speedup_vs_baseline:.2f}x" if lr.speedup_vs_baseline else "?"
    gate = r.gate
    gated = ("" if gate is None else
             f"; gate on {gate.get('candidate')}: {'passed' if gate.get('passed') else 'FAILED'}")
    return (f"ship {c.name}: {speed} the baseline's speed on {runtime} at batch {batch} "
            f"(p50 {lr.p50_ms:.3f} ms), {metric_label(m)} {delta:+.2f} pts (bound "
            f"{bound:g}, {why}), {(c.onnx_size_bytes or 0) / 1e6:.2f} MB{gated}")


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
    (ONNX Runtime CPU, batch 1, end to end) than what it replaces for the user: the candidate
    before it, passing over steps a later stage recovers (``prune+distill`` replaces the
    baseline, not the un-recovered ``prune``), said plainly when it is not."""
    lines = []
    skip = intermediate(r)
    for i, c in enumerate(r.candidates[1:], 1):
        prev = next((p for p in reversed(r.candidates[:i]) if p.name not in skip),
                    r.candidates[0])
        size = (c.onnx_size_bytes or 0) < (prev.onnx_size_bytes or 0)
        a, b = c.latency_at("onnxruntime-cpu", 1), prev.latency_at("onnxruntime-cpu", 1)
        step = " (a step a later stage recovers)" if c.name in skip else ""
        if a is None or b is None:
            lines.append(f"{c.name}: {'smaller' if size else 'NOT smaller'} than {prev.name}; "
                         f"latency not measured{step}")
            continue
        faster = a.p50_ms < b.p50_ms
        lines.append(f"{c.name}: {'smaller' if size else 'NOT smaller'} and "
                     f"{'faster' if faster else 'NOT faster'} end to end than {prev.name} "
                     f"({(c.onnx_size_bytes or 0) / 1e6:.2f} vs "
                     f"{(prev.onnx_size_bytes or 0) / 1e6:.2f} MB, p50 {a.p50_ms:.2f} vs "
                     f"{b.p50_ms:.2f} ms at batch 1){step}")
    return lines


@dataclass(frozen=True)
class FastestRuntime:
    """Where one candidate runs fastest at one batch size: the runtime (and set-up), its
    p50, and the next fastest runtime with its p50."""

    candidate: str
    precision: str
    batch: int
    runtime: str
    setup: str | None
    p50_ms: float
    runner_up: str | None
    runner_up_ms: float | None


def fastest_runtimes(r: Report) -> list[FastestRuntime]:
    """Per candidate and batch size timed on at least two runtimes, the fastest runtime (the
    end-to-end rows; PyTorch's simulation of INT8 is never timed, so never chosen)."""
    out = []
    for c in r.candidates:
        for batch in sorted({lr.batch for lr in c.latency}):
            rows = sorted((lr for lr in c.latency if lr.batch == batch), key=lambda lr: lr.p50_ms)
            if len({lr.key for lr in rows}) < 2:
                continue
            best = rows[0]
            other = next((lr for lr in rows[1:] if lr.key != best.key), None)
            out.append(FastestRuntime(c.name, c.precision, batch, best.key, best.setup,
                                      best.p50_ms, other.key if other else None,
                                      other.p50_ms if other else None))
    return out
