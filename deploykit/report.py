"""The run report: plain dataclasses with units in key names, JSON round-trip, Markdown table.

This module is a leaf (it imports nothing from deploykit) so that measurement code can fill
it and any tool can read a ``report.json`` back without the rest of the package.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_VERSION", "CandidateReport", "LatencyRecord", "Report"]

SCHEMA_VERSION = 1


@dataclass
class LatencyRecord:
    """One latency figure; always names runtime, device, precision, batch and threads."""

    runtime: str
    device: str
    precision: str
    batch: int
    threads: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput_ips: float
    speedup_vs_baseline: float | None = None


@dataclass
class CandidateReport:
    """Everything measured about one candidate model."""

    name: str
    precision: str
    macs: int
    params: int
    onnx_file: str | None = None
    onnx_size_bytes: int | None = None
    top1_pct: dict[str, float] = field(default_factory=dict)  # runtime -> top-1
    top5_pct: dict[str, float] = field(default_factory=dict)
    delta_top1_pts: float | None = None  # artifact top-1 minus the baseline's, in points
    parity: dict[str, float] = field(default_factory=dict)
    latency: list[LatencyRecord] = field(default_factory=list)
    keep_float: list[str] = field(default_factory=list)
    arch: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CandidateReport:
        d = dict(d)
        d["latency"] = [LatencyRecord(**r) for r in d.get("latency", [])]
        return cls(**d)

    def artifact_top1_pct(self) -> float | None:
        """Top-1 of the deployed artifact (ONNX Runtime) if measured, else PyTorch's."""
        for key in ("onnxruntime-cpu", "torch-cpu"):
            if key in self.top1_pct:
                return self.top1_pct[key]
        return None


@dataclass
class Report:
    """A whole run: environment, recipe identity, stages, and one entry per candidate."""

    recipe_name: str
    recipe_hash: str
    seed: int
    created_utc: str
    environment: dict[str, Any]
    recipe: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[CandidateReport] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"report schema_version {d.get('schema_version')!r} is not "
                             f"{SCHEMA_VERSION}; regenerate it with this deploykit version")
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

    def to_markdown(self) -> str:
        return _markdown(self)


def _fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def _markdown(r: Report) -> str:
    env = r.environment
    runtimes = sorted({k for c in r.candidates for k in c.top1_pct})
    lines = [
        f"# deploykit report: {r.recipe_name}",
        "",
        f"- created: {r.created_utc} UTC; seed {r.seed}; recipe sha256 `{r.recipe_hash[:16]}`",
        f"- machine: {env.get('cpu_model')} ({env.get('cpu_cores')} cores), "
        f"threads {env.get('threads')}, GPU {env.get('gpu') or 'none'}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()),
        "",
        "## Candidates",
        "",
        "| candidate | precision | MACs (M) | params (M) | ONNX (MB) | "
        + " | ".join(f"top-1 {rt} (%)" for rt in runtimes)
        + " | Δ top-1 (pts) | parity max abs err |",
        "|---|---|---:|---:|---:|" + "---:|" * len(runtimes) + "---:|---:|",
    ]
    for c in r.candidates:
        size = None if c.onnx_size_bytes is None else c.onnx_size_bytes / 1e6
        accs = " | ".join(_fmt(c.top1_pct.get(rt)) for rt in runtimes)
        lines.append(f"| {c.name} | {c.precision} | {c.macs / 1e6:.2f} | {c.params / 1e6:.3f} | "
                     f"{_fmt(size, '.3f')} | {accs} | {_fmt(c.delta_top1_pts, '+.2f')} | "
                     f"{_fmt(c.parity.get('max_abs_error'), '.2e')} |")
    lines += [
        "",
        "## Latency",
        "",
        "Per batch, milliseconds; candidates timed alternately in one process; speed-up is the "
        "baseline's p50 over the candidate's on the same runtime and batch.",
        "",
        "| candidate | runtime | device | batch | threads | p50 | p90 | p99 | mean ± std | "
        "images/s | speed-up |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in r.candidates:
        for lr in c.latency:
            lines.append(
                f"| {c.name} | {lr.runtime} | {lr.device} | {lr.batch} | {lr.threads} | "
                f"{lr.p50_ms:.3f} | {lr.p90_ms:.3f} | {lr.p99_ms:.3f} | "
                f"{lr.mean_ms:.3f} ± {lr.std_ms:.3f} | {lr.throughput_ips:.0f} | "
                f"{_fmt(lr.speedup_vs_baseline, '.2f', 'x')} |")
    if r.stages:
        lines += ["", "## Stages", "", "| stage | seconds | metrics |", "|---|---:|---|"]
        for s in r.stages:
            metrics = ", ".join(f"{k}={_short(v)}" for k, v in s.get("metrics", {}).items())
            lines.append(f"| {s['name']} | {s['seconds']:.1f} | {metrics} |")
    return "\n".join(lines) + "\n"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        text = json.dumps(v)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(v)
