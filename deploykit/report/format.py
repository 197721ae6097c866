"""How the report's views write numbers and metric names."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["METRIC_LABELS", "fmt", "metric_label", "short"]

METRIC_LABELS = {"top1_pct": "top-1", "top5_pct": "top-5", "map50_pct": "mAP@.5",
                 "map_pct": "mAP@[.5:.95]"}
"""Readable names of the metrics deploykit's tasks measure; any other key is shown as is."""


def metric_label(metric: str) -> str:
    """``top1_pct`` -> ``top-1``; a metric without a label shows its key."""
    return METRIC_LABELS.get(metric, metric)


def fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    """``v`` formatted, or ``-`` when it was not measured."""
    return "-" if v is None else f"{v:{spec}}{suffix}"


def short(v: Any) -> str:
    """A stage metric in a table cell: floats to 4 digits, long lists cut at 60 characters."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        text = json.dumps(v)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(v)
