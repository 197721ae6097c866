"""The ``tune:`` section: what ``deploykit tune`` searches (key paths into the recipe, each a
list of choices or a numeric range), what it measures (latency on one runtime and batch,
against the baseline timed in the same run; accuracy of the exported artifact) and the
constraints a point must meet.

Key paths name a stage by its kind (``prune.target.macs_ratio``: the recipe's one prune stage)
or by position (``stages[1].train.epochs``), or a top-level section (``train.epochs``). Their
values are checked against the recipe's own schema by ``deploykit.tune.space`` when the study
starts, so a range outside a key's limits is an error before any training.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from deploykit.recipe.base import Strict
from deploykit.recipe.runtimes import Runtime

__all__ = ["RangeSpec", "TuneConstraints", "TuneLatency", "TuneSpec"]


class RangeSpec(Strict):
    """A numeric range: integers when ``low`` and ``high`` are both integers, else floats;
    ``step`` quantises it, ``log`` samples it on a log scale."""

    low: float | int
    high: float | int
    step: float | int | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step do not go together; choose one")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (self.low, self.high, self.step if self.step is not None else 1))


class TuneLatency(Strict):
    """The latency objective: the last candidate's p50 over the baseline's, timed alternately
    in the same run, on ``runtime`` at ``batch`` (both must be in the recipe's ``bench``)."""

    runtime: Runtime = "onnxruntime-cpu"
    batch: int = Field(1, ge=1)


class TuneConstraints(Strict):
    """A point meeting all of these is feasible; only feasible points make the front."""

    max_latency_ratio: float | None = Field(
        None, gt=0, description="the last candidate's latency over the baseline's, at most")
    max_accuracy_drop: float | None = Field(
        None, ge=0, description="points of top-1 (mAP@.5 for detectors) of the exported "
        "artifact below the baseline's, at most")
    max_size_mb: float | None = Field(None, gt=0, description="the ONNX file, at most")


class TuneSpec(Strict):
    """What ``deploykit tune`` searches and how it scores a point (see the module notes)."""

    space: dict[str, list[Any] | RangeSpec] = Field(
        description="key path -> a list of choices, or {low, high[, step][, log]}")
    latency: TuneLatency = TuneLatency()
    constraints: TuneConstraints = TuneConstraints()
    sampler: Literal["tpe", "nsga2"] = "tpe"
    trials: int = Field(20, ge=1, le=10_000, description="default for --trials")
    startup_trials: int = Field(8, ge=1, description="random trials before TPE models the "
                                "space (NSGA-II: the population size)")

    @model_validator(mode="after")
    def _not_empty(self) -> TuneSpec:
        if not self.space:
            raise ValueError("space: empty; name at least one key path to search, e.g. "
                             "prune.target.macs_ratio: {low: 0.3, high: 0.9}")
        for key, v in self.space.items():
            if isinstance(v, list) and not v:
                raise ValueError(f"space.{key}: an empty choice list; give at least one value")
        return self
