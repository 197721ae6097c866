"""The run report: plain dataclasses with units in key names, JSON round-trip, Markdown table.

Its latency records extend the timing statistics of :mod:`deploykit.bench.latency`, so a
figure goes from the timer to the report without being copied field by field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deploykit.bench import LatencyStats
from deploykit.progress import Table
from deploykit.recipe import RUNTIME_TABLE, legacy_runtime_name

__all__ = ["CSV_COLUMNS", "SCHEMA_VERSION", "CandidateReport", "LatencyRecord", "Report", "Table",
           "float_twin", "int8_recommendation", "report_tables", "summary_lines", "summary_table"]

# runtimes that run an INT8 artifact with integer kernels (torch-cpu runs its simulation)
_INT8_RUNTIMES = tuple(r.name for r in RUNTIME_TABLE if r.int8_native)

SCHEMA_VERSION = 1


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
    peak_fraction: float | None = None    # GPU: tflops over the GPU's dense FP16 peak
    name: str | None = None               # the runtime table's name; None in older reports

    @classmethod
    def from_stats(cls, stats: LatencyStats, **labels: Any) -> LatencyRecord:
        """A record from timing ``stats`` plus the labels (``runtime``, ``device``, ...)."""
        return cls(**asdict(stats), **labels)

    @property
    def key(self) -> str:
        """The runtime's name in the runtime table, which recipes, gates and ``tune`` use
        (e.g. ``onnxruntime-cpu``, ``tensorrt``); derived for rows of older reports."""
        return self.name or legacy_runtime_name(self.runtime, self.device, self.setup)


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
    # detectors: mAP per runtime, and the network timed alone (``latency`` is end to end)
    map_pct: dict[str, float] = field(default_factory=dict)     # COCO mAP@[.5:.95]
    map50_pct: dict[str, float] = field(default_factory=dict)
    delta_map50_pts: float | None = None
    network_latency: list[LatencyRecord] = field(default_factory=list)
    not_timed: dict[str, str] = field(default_factory=dict)   # runtime -> why it was not timed

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CandidateReport:
        d = dict(d)
        d["latency"] = [LatencyRecord(**r) for r in d.get("latency", [])]
        d["network_latency"] = [LatencyRecord(**r) for r in d.get("network_latency", [])]
        return cls(**d)

    @property
    def is_detector(self) -> bool:
        return bool(self.map50_pct)

    def artifact_map50_pct(self) -> float | None:
        """mAP@.5 of the deployed artifact (ONNX Runtime) if measured, else PyTorch's."""
        return next((self.map50_pct[k] for k in ("onnxruntime-cpu", "torch-cpu")
                     if k in self.map50_pct), None)

    def latency_at(self, runtime: str, batch: int) -> LatencyRecord | None:
        """The record for ``runtime`` (``onnxruntime-cpu`` style key) at ``batch``, if measured."""
        return next((r for r in self.latency if r.key == runtime and r.batch == batch), None)

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
    gate: dict[str, Any] | None = None  # the recipe's gates checked at the end of the run
    recommendation: str | None = None   # e.g. deploy the float twin: INT8 does not pay here
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

    @property
    def baseline(self) -> CandidateReport | None:
        """The first candidate: the uncompressed model every delta and speed-up refers to."""
        return self.candidates[0] if self.candidates else None

    def to_markdown(self) -> str:
        return _markdown(self)

    def to_csv(self) -> str:
        """One row per candidate and measured (runtime, batch); candidates never timed get one."""
        return _csv(self)


CSV_COLUMNS = ("candidate", "precision", "runtime", "setup", "batch", "threads",
               "top1_artifact_pct", "top1_torch_pct", "delta_top1_pts", "p50_ms", "p90_ms",
               "p99_ms", "mean_ms", "std_ms", "throughput_ips", "speedup_vs_baseline", "macs",
               "params", "onnx_size_bytes", "layers_kept_float", "gpu_memory_mb", "tflops",
               "fp16_peak_fraction")


def _csv(r: Report) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for c in r.candidates:
        common = {"candidate": c.name, "precision": c.precision,
                  "top1_artifact_pct": c.artifact_top1_pct(),
                  "top1_torch_pct": c.top1_pct.get("torch-cpu"),
                  "delta_top1_pts": c.delta_top1_pts, "macs": c.macs, "params": c.params,
                  "onnx_size_bytes": c.onnx_size_bytes,
                  "layers_kept_float": ";".join(c.keep_float)}
        for lr in c.latency or [None]:
            row = dict(common)
            if lr is not None:
                row.update(runtime=lr.key, setup=lr.setup, batch=lr.batch, threads=lr.threads,
                           gpu_memory_mb=lr.peak_memory_mb, tflops=lr.tflops,
                           fp16_peak_fraction=lr.peak_fraction,
                           p50_ms=lr.p50_ms, p90_ms=lr.p90_ms, p99_ms=lr.p99_ms,
                           mean_ms=lr.mean_ms, std_ms=lr.std_ms,
                           throughput_ips=lr.throughput_ips,
                           speedup_vs_baseline=lr.speedup_vs_baseline)
            w.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def _fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def summary_lines(r: Report) -> list[str]:
    """Run identity and machine, one fact per line."""
    env = r.environment
    return [
        f"created {r.created_utc} UTC; seed {r.seed}; recipe sha256 {r.recipe_hash[:16]}",
        f"machine: {env.get('cpu_model')} ({env.get('cpu_cores')} cores; INT8 features: "
        f"{', '.join(env.get('cpu_int8_features') or []) or 'unknown'}), threads "
        f"{env.get('threads')}, GPU {env.get('gpu') or 'none'}; {env.get('os', '')}",
        "packages: " + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()),
        *([f"recommendation: {r.recommendation}"] if r.recommendation else []),
    ]


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


def summary_table(r: Report) -> Table:
    """One line per candidate: MACs, artifact top-1 and its change, ORT CPU latency at batch 1."""
    if any(c.is_detector for c in r.candidates):
        from deploykit.report.detection import detection_summary

        return detection_summary(r)
    rows = []
    for c in r.candidates:
        ort1 = c.latency_at("onnxruntime-cpu", 1)
        speedup = None if ort1 is None else ort1.speedup_vs_baseline
        rows.append((c.name, f"{c.macs / 1e6:.2f}", _fmt(c.artifact_top1_pct()),
                     _fmt(c.delta_top1_pts, "+.2f"), _fmt(getattr(ort1, "p50_ms", None), ".3f"),
                     _fmt(speedup, ".2f", "x")))
    return Table(f"deploykit: {r.recipe_name}",
                 ("candidate", "MACs (M)", "top-1 ORT (%)", "Δ (pts)", "ORT p50 b1 (ms)",
                  "speed-up b1"), rows)


def report_tables(r: Report) -> list[Table]:
    """The report's content as tables: candidates, latency, layers kept float, stages."""
    if any(c.is_detector for c in r.candidates):
        from deploykit.report.detection import detection_tables

        return detection_tables(r) + _stage_tables(r)
    runtimes = sorted({k for c in r.candidates for k in c.top1_pct})
    cand_rows = []
    for c in r.candidates:
        size = None if c.onnx_size_bytes is None else c.onnx_size_bytes / 1e6
        cand_rows.append((c.name, c.precision, f"{c.macs / 1e6:.2f}", f"{c.params / 1e6:.3f}",
                          _fmt(size, ".3f"), *(_fmt(c.top1_pct.get(rt)) for rt in runtimes),
                          _fmt(c.delta_top1_pts, "+.2f"),
                          _fmt(c.parity.get("max_abs_error"), ".2e"), str(len(c.keep_float))))
    tables = [Table(
        "Candidates",
        ("candidate", "precision", "MACs (M)", "params (M)", "ONNX (MB)",
         *(f"top-1 {rt} (%)" for rt in runtimes), "Δ top-1 (pts)", "parity max abs err",
         "layers kept float"),
        cand_rows, note="Top-1 on the validation set, measured on each runtime; Δ is the "
                        "artifact's top-1 minus the baseline's.", numeric_from=2)]
    from deploykit.report.latency_table import latency_table

    tables.append(latency_table(r))
    kept = [(c.name, c.precision, ", ".join(c.keep_float)) for c in r.candidates if c.keep_float]
    if kept:
        tables.append(Table("Layers kept in float", ("candidate", "precision", "layers"), kept,
                            numeric_from=3))
    for c in r.candidates:
        lp = c.arch.get("layer_precision")
        if lp:
            tables.append(Table(f"Layer precision: {c.name}", ("layer", "precision"),
                                list(lp.items()), numeric_from=2))
    return tables + _stage_tables(r)


def _stage_tables(r: Report) -> list[Table]:
    tables = []
    if r.stages:
        tables.append(Table(
            "Stages", ("stage", "seconds", "peak memory GiB", "metrics"),
            [(s["name"], f"{s['seconds']:.1f}",
              "-" if s.get("peak_rss_gb") is None else f"{s['peak_rss_gb']:.2f}",
              ", ".join(f"{k}={_short(v)}" for k, v in s.get("metrics", {}).items()))
             for s in r.stages], note="Wall-clock seconds spent in each stage, and the "
            "process's peak resident memory during it.", numeric_from=1))
    return tables


def _markdown(r: Report) -> str:
    lines = [f"# deploykit report: {r.recipe_name}", ""]
    lines += [f"- {line}" for line in summary_lines(r)]
    for t in report_tables(r):
        lines += ["", f"## {t.title}", ""]
        if t.note:
            lines += [t.note, ""]
        lines.append("| " + " | ".join(t.headers) + " |")
        lines.append("|" + "".join("---:|" if i >= t.numeric_from else "---|"
                                   for i in range(len(t.headers))))
        lines += ["| " + " | ".join(row) + " |" for row in t.rows]
    return "\n".join(lines) + "\n"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        text = json.dumps(v)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(v)
