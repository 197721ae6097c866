"""The recipe's ``gates:`` section: thresholds a run must meet for CI to pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from deploykit.recipe.base import Strict
from deploykit.recipe.runtimes import Runtime

__all__ = ["GateSpec", "LatencyAt", "MetricAt"]


class MetricAt(Strict):
    """A threshold on one runtime; ``batch: null`` checks every batch size measured there."""

    value: float
    runtime: Runtime = "onnxruntime-cpu"
    batch: int | None = Field(None, ge=1)


class LatencyAt(MetricAt):
    """A latency ceiling in milliseconds per batch, on a chosen percentile."""

    percentile: Literal["p50", "p90", "p99"] = "p50"


def _bare_number(v: Any) -> Any:
    """``min_speedup: 2.0`` is short for ``min_speedup: {value: 2.0}``."""
    return {"value": v} if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class GateSpec(Strict):
    """Accuracy-vs-speed thresholds, checked on one candidate (default: the last, i.e. the model
    the recipe deploys). Any threshold left null is not checked."""

    candidate: str | None = None
    max_accuracy_drop: float | None = Field(None, ge=0, description="top-1 points vs baseline")
    max_map_drop: float | None = Field(None, ge=0, description="detectors: mAP@.5 points vs "
                                       "baseline, of the exported artifact")
    min_speedup: MetricAt | None = None
    min_speedup_over_previous: MetricAt | None = Field(
        None, description="p50 speed-up over the candidate just before it (an INT8 candidate's "
                          "float twin), so a step that slows the model fails")
    max_latency_ms: LatencyAt | None = None
    max_size_mb: float | None = Field(None, gt=0, description="ONNX file, 1 MB = 1e6 bytes")
    max_latency_regression: MetricAt | None = Field(
        None, description="percent slower than the same candidate in the baseline report, "
                          "beyond the measured timing noise")
    baseline: Path | None = Field(None, description="earlier report.json for the regression")

    _numbers = field_validator("min_speedup", "min_speedup_over_previous", "max_latency_ms",
                               "max_latency_regression", mode="before")(_bare_number)

    def thresholds(self) -> list[str]:
        """Names of the thresholds that are set."""
        return [k for k in ("max_accuracy_drop", "max_map_drop", "min_speedup",
                            "min_speedup_over_previous", "max_latency_ms", "max_size_mb",
                            "max_latency_regression")
                if getattr(self, k) is not None]
