"""The run report's data: plain dataclasses with units in key names and a JSON round-trip (a
report of schema 1 is still read). Its views (Markdown, CSV, HTML, plot) are modules beside it.

Its latency records extend the timing statistics of :mod:`deploykit.bench.latency`, so a
figure goes from the timer to the report without being copied field by field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from deploykit.bench import LatencyStats
from deploykit.recipe import RUNTIME_TABLE, legacy_runtime_name
from deploykit.report.csvfile import to_csv
from deploykit.report.markdown import to_markdown

__all__ = ["SCHEMA_VERSION", "CandidateReport", "LatencyRecord", "Report"]

SCHEMA_VERSION = 2


@dataclass(kw_only=True)
class LatencyRecord(LatencyStats):
    """One latency figure: the timing statistics (:class:`~deploykit.bench.LatencyStats`)
    labelled with what was timed; always names runtime, device, precision, batch and threads.

    ``name`` is the runtime's name in the runtime table (``onnxruntime-tensorrt``), which
    gates and ``tune`` look rows up by; ``runtime`` is the engine (``onnxruntime``)."""

    runtime: str
    device: str
    precision: str
    threads: int
    speedup_vs_baseline: float | None = None
    device_p50_ms: float | None = None  # GPU runtimes: compute alone (CUDA events, input resident)
    setup: str | None = None            # how it ran, e.g. "fp16, channels_last, CUDA graphs"
    peak_memory_mb: float | None = None   # GPU: weights + what one forward allocates at peak
    tflops: float | None = None           # GPU: 2 x MACs x batch / time (device time if known)
    # GPU: tflops over the GPU's dense FP16 peak; CPU: gmacs_per_s over the CPU's peak for the
    # row's precision (peak_basis says how that peak was derived)
    peak_fraction: float | None = None
    name: str | None = None               # the runtime table's name; None in older reports
    gmacs_per_s: float | None = None      # CPU: MACs x batch / p50, in GMAC/s
    peak_basis: str | None = None         # CPU: cores x clock x MAC/cycle of the instruction set

    @classmethod
    def from_stats(cls, stats: LatencyStats, **labels: Any) -> LatencyRecord:
        """A record from timing ``stats`` plus the labels (``runtime``, ``device``, ...)."""
        return cls(**asdict(stats), **labels)

    @property
    def key(self) -> str:
        """The runtime's name in the runtime table, which recipes, gates and ``tune`` use
        (e.g. ``onnxruntime-cpu``, ``tensorrt``); derived for rows of older reports."""
        return self.name or legacy_runtime_name(self.runtime, self.device, self.setup)


def _metric_view(metric: str, doc: str) -> property:
    """``candidate.<metric>``: a read-only view of ``metrics[metric]`` (runtime -> value)."""

    def get(self: CandidateReport) -> Mapping[str, float]:
        return MappingProxyType(self.metrics.get(metric, {}))

    def put(self: CandidateReport, value: dict[str, float]) -> None:
        self.metrics[metric] = dict(value)

    return property(get, put, doc=doc)


def _delta_view(metric: str) -> property:
    def get(self: CandidateReport) -> float | None:
        return self.delta_pts.get(metric)

    def put(self: CandidateReport, value: float | None) -> None:
        if value is None:
            self.delta_pts.pop(metric, None)
        else:
            self.delta_pts[metric] = value

    return property(get, put, doc=f"``delta_pts['{metric}']``: the artifact's change in points")


# runtimes whose figure stands for the deployed artifact, most preferred first (PyTorch last:
# it runs the model, not the artifact)
_ARTIFACT_ORDER = ("onnxruntime-cpu", *(r.name for r in RUNTIME_TABLE if r.runs == "onnx"),
                   "torch-cpu")


@dataclass
class CandidateReport:
    """Everything measured about one candidate model.

    ``metrics`` holds every quality figure as ``metric -> runtime -> value`` (``top1_pct``,
    ``top5_pct``, ``map50_pct``, ``map_pct``, or whatever a task measures), ``delta_pts`` the
    artifact's change over the baseline per metric, in points.
    """

    name: str
    precision: str
    macs: int
    params: int
    onnx_file: str | None = None
    onnx_size_bytes: int | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    delta_pts: dict[str, float] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    latency: list[LatencyRecord] = field(default_factory=list)
    keep_float: list[str] = field(default_factory=list)
    arch: dict[str, Any] = field(default_factory=dict)
    # the network timed alone, where the task exports it apart (``latency`` is end to end)
    network_latency: list[LatencyRecord] = field(default_factory=list)
    not_timed: dict[str, str] = field(default_factory=dict)   # runtime -> why it was not timed

    top1_pct = _metric_view("top1_pct", "top-1 per runtime")
    top5_pct = _metric_view("top5_pct", "top-5 per runtime")
    map_pct = _metric_view("map_pct", "COCO mAP@[.5:.95] per runtime")
    map50_pct = _metric_view("map50_pct", "mAP@.5 per runtime")
    delta_top1_pts = _delta_view("top1_pct")
    delta_map50_pts = _delta_view("map50_pct")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CandidateReport:
        d = dict(d)
        d["latency"] = [LatencyRecord(**r) for r in d.get("latency", [])]
        d["network_latency"] = [LatencyRecord(**r) for r in d.get("network_latency", [])]
        return cls(**d)

    def artifact(self, metric: str) -> float | None:
        """``metric`` of the deployed artifact (ONNX Runtime CPU, else another runtime that
        runs the exported file), else PyTorch's; ``None`` if not measured."""
        values = self.metrics.get(metric, {})
        return next((values[k] for k in (*_ARTIFACT_ORDER, *values) if k in values), None)

    @property
    def is_detector(self) -> bool:
        return "map50_pct" in self.metrics

    def artifact_map50_pct(self) -> float | None:
        """mAP@.5 of the deployed artifact (ONNX Runtime) if measured, else PyTorch's."""
        return self.artifact("map50_pct")

    def latency_at(self, runtime: str, batch: int) -> LatencyRecord | None:
        """The record for ``runtime`` (``onnxruntime-cpu`` style key) at ``batch``, if measured."""
        return next((r for r in self.latency if r.key == runtime and r.batch == batch), None)

    def artifact_top1_pct(self) -> float | None:
        """Top-1 of the deployed artifact (ONNX Runtime) if measured, else PyTorch's."""
        return self.artifact("top1_pct")


def _from_schema_1(d: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 report (quality figures as ``top1_pct``, ``map50_pct``, ... fields of each
    candidate) in today's shape, so gates against reports written then keep working."""
    d = dict(d)
    cands = []
    for c in d.get("candidates", []):
        c = dict(c)
        c["metrics"] = {m: v for m in ("top1_pct", "top5_pct", "map_pct", "map50_pct")
                        if (v := c.pop(m, None))}
        c["delta_pts"] = {m: v for m, key in (("top1_pct", "delta_top1_pts"),
                                               ("map50_pct", "delta_map50_pts"))
                          if (v := c.pop(key, None)) is not None}
        cands.append(c)
    detection = any("map50_pct" in c["metrics"] for c in cands)
    d["candidates"] = cands
    d["task"] = "detection" if detection else "classification"
    d["primary_metric"] = "map50_pct" if detection else "top1_pct"
    d["schema_version"] = SCHEMA_VERSION
    return d


@dataclass
class Report:
    """A whole run: environment, recipe identity, stages, and one entry per candidate.

    ``task`` is the recipe's task; ``primary_metric`` the metric the task judges candidates by
    (a key of every candidate's ``metrics``), which the summary, the Pareto plot, the CSV and
    ``compare`` lead with.
    """

    recipe_name: str
    recipe_hash: str
    seed: int
    created_utc: str
    environment: dict[str, Any]
    recipe: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[CandidateReport] = field(default_factory=list)
    gate: dict[str, Any] | None = None  # the recipe's gates checked at the end of the run
    recommendation: str | None = None   # e.g. deploy the float twin: INT8 does not pay here
    task: str = "classification"
    primary_metric: str = "top1_pct"
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        if d.get("schema_version") == 1:
            d = _from_schema_1(d)
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"report schema_version {d.get('schema_version')!r} is not "
                             f"{SCHEMA_VERSION} (or 1, which is still read); regenerate it with "
                             "this deploykit version")
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["candidates"] = [CandidateReport.from_dict(c) for c in d.get("candidates", [])]
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> Report:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def candidate(self, name: str) -> CandidateReport:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(f"no candidate {name!r}; have {[c.name for c in self.candidates]}")

    @property
    def baseline(self) -> CandidateReport | None:
        """The first candidate: the uncompressed model every delta and speed-up refers to."""
        return self.candidates[0] if self.candidates else None

    @property
    def metric_names(self) -> list[str]:
        """Every metric a candidate has, the primary one first."""
        seen = dict.fromkeys([self.primary_metric])
        for c in self.candidates:
            seen.update(dict.fromkeys(c.metrics))
        return list(seen)

    def to_markdown(self) -> str:
        return to_markdown(self)

    def to_csv(self) -> str:
        """One row per candidate and measured (runtime, batch); candidates never timed get one."""
        return to_csv(self)
