"""Does INT8 pay? Time INT8 placements against their float twin and keep the fastest.

INT8 is not faster everywhere. On some CPUs ONNX Runtime's integer kernels lose to float on
thin layers, requantizing around float layers (first/last float) costs time, and a uint8
max-pool is a slow generic kernel on one CPU and fine on another. So after quantizing for
``onnxruntime-cpu`` (or ``openvino``) the artifact is timed against its float twin on that
runtime, alternately, at each batch size; when it is slower somewhere, the other placements
are built, checked for accuracy and timed together, and the fastest within the accuracy bound
is kept. When none beats the float twin, that is recorded: INT8 does not pay on this machine.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from deploykit.bench import time_onnx_files
from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.quant import QuantizedModel, accuracy_on
from deploykit.recipe import SpeedCheckSpec

__all__ = ["Placement", "PlacementTrial", "SpeedCheck", "candidate_placements", "check_speed"]

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Placement:
    """Where the quantizers go: the layers left float, whether max-pools run in INT8, and
    whether weights have one scale per tensor instead of one per output channel."""

    name: str
    keep_float: tuple[str, ...]
    int8_maxpool: bool = False
    per_tensor_weights: bool = False


@dataclass
class PlacementTrial:
    """One placement measured: fake-quant top-1 and ONNX Runtime p50 per batch size."""

    name: str
    keep_float: list[str]
    int8_maxpool: bool
    per_tensor_weights: bool
    top1_pct: float
    ms: dict[int, float] = field(default_factory=dict)
    speedup_vs_float: dict[int, float] = field(default_factory=dict)

    @property
    def worst_speedup(self) -> float:
        return min(self.speedup_vs_float.values())


@dataclass
class SpeedCheck:
    """The verdict: every trial, the float twin's p50, the placement kept, and whether it pays."""

    float_ms: dict[int, float]
    trials: list[PlacementTrial]
    chosen: str
    int8_pays: bool
    note: str
    runtime: str = "onnxruntime-cpu"

    def to_dict(self) -> dict:
        return asdict(self)


def candidate_placements(configured: Sequence[str], every_layer: Sequence[str],
                         has_maxpool: bool, scheme_pools_int8: bool) -> list[Placement]:
    """The placements worth trying, the configured one first: every layer INT8 (only the
    layers the user named stay float), max-pools in INT8 where the scheme pools in float, and
    the most-INT8 one with per-tensor weight scales (simpler integer kernels, less accuracy).
    QOperator is not a separate trial: ONNX Runtime fuses each QDQ group into its QLinear*
    operator itself when it loads the model."""
    out = [Placement("configured", tuple(configured))]
    if list(every_layer) != list(configured):
        out.append(Placement("every layer INT8", tuple(every_layer)))
    if has_maxpool and not scheme_pools_int8:
        out += [Placement(f"{p.name}, INT8 max-pools", p.keep_float, True) for p in list(out)]
    most = out[-1]
    out.append(Placement(f"{most.name}, per-tensor weights", most.keep_float, most.int8_maxpool,
                         per_tensor_weights=True))
    return out


def _measure(trials: dict[str, PlacementTrial], paths: dict[str, Path],
             shape: tuple[int, int, int], spec: SpeedCheckSpec, runtime: str
             ) -> dict[int, float]:
    ms = time_onnx_files(paths, shape, spec.batch_sizes, spec.threads, spec.iterations,
                         runtime=runtime)
    for name, trial in trials.items():
        trial.ms = ms[name]
        trial.speedup_vs_float = {b: ms["float"][b] / ms[name][b] for b in spec.batch_sizes}
    return ms["float"]


def check_speed(float_model: nn.Module, build: Callable[[Placement], QuantizedModel],
                placements: Sequence[Placement], batches: Batches, float_top1: float,
                shape: tuple[int, int, int], spec: SpeedCheckSpec,
                configured: QuantizedModel | None = None, runtime: str = "onnxruntime-cpu"
                ) -> tuple[SpeedCheck, QuantizedModel, Placement]:
    """Time ``placements[0]`` against the float model on ``runtime``; if it is slower at any
    batch size, try the rest and keep the fastest (best worst-case speed-up) whose top-1 on
    ``batches`` is within ``spec.max_accuracy_drop`` points of ``float_top1``.

    ``configured``: the already built model of ``placements[0]``, if there is one.

    Returns:
        The verdict, the model of the placement kept, and that placement.
    """
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = {"float": export_onnx(float_model, shape, work / "float.onnx")}
        models: dict[str, QuantizedModel] = {}
        trials: dict[str, PlacementTrial] = {}
        for i, p in enumerate(placements):
            if i == 1 and trials["configured"].worst_speedup >= 1.0:
                break       # the configured placement already pays: nothing to search
            models[p.name] = qm = configured if i == 0 and configured is not None else build(p)
            trials[p.name] = PlacementTrial(p.name, list(p.keep_float), p.int8_maxpool,
                                            p.per_tensor_weights, accuracy_on(qm, batches))
            paths[p.name] = export_onnx(qm, shape, work / f"int8-{i}.onnx")
            if i == 0:
                float_ms = _measure(trials, paths, shape, spec, runtime)
        if len(trials) > 1:   # re-time every placement together, alternately with float
            float_ms = _measure(trials, paths, shape, spec, runtime)
    within = [t for t in trials.values() if float_top1 - t.top1_pct <= spec.max_accuracy_drop]
    best = max(within or [trials["configured"]], key=lambda t: t.worst_speedup)
    pays = best.worst_speedup >= 1.0
    where = ", ".join(f"{s:.2f}x at batch {b}" for b, s in best.speedup_vs_float.items())
    note = (f"INT8 pays on {runtime}: placement {best.name!r}, speed-up over its float twin "
            f"{where}" if pays else
            f"INT8 does not pay on this machine ({runtime}): of {len(trials)} placement(s) "
            "tried, the "
            f"fastest within {spec.max_accuracy_drop} points ({best.name!r}) has a speed-up "
            f"over its float twin of {where}; deploy the float candidate")
    log(f"quantize: {note}")
    chosen = next(p for p in placements if p.name == best.name)
    return (SpeedCheck(float_ms, list(trials.values()), best.name, pays, note, runtime),
            models[best.name], chosen)
