"""The CI gate: thresholds on a report (and an earlier report) -> checks, verdict, JUnit XML.

Every threshold becomes one or more :class:`Check` rows (one per runtime and batch where that
applies). A metric the report does not contain fails its check (fail closed) with a message
naming it, so a gate can never pass because something was not measured.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deploykit.atomic import write_text
from deploykit.errors import DeployKitError
from deploykit.progress import Table, log, print_table
from deploykit.recipe import GateSpec, MetricAt
from deploykit.report import CandidateReport, LatencyRecord, Report, load_report

__all__ = ["Check", "GateResult", "apply_gate", "evaluate_gates", "gate_report", "gate_spec",
           "junit_xml", "load_baseline", "regression_noise_pct", "write_junit"]


@dataclass(frozen=True)
class Check:
    """One gate check: what was measured, the threshold, and the verdict."""

    name: str
    measured: float | None
    threshold: float
    comparison: str  # "<=" or ">="
    unit: str
    passed: bool
    message: str


@dataclass
class GateResult:
    """All checks of one gate run on one candidate."""

    candidate: str
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when every check passes, 1 otherwise (2 is reserved for bad input)."""
        return 0 if self.passed else 1

    def to_dict(self) -> dict:
        return {"candidate": self.candidate, "passed": self.passed,
                "checks": [asdict(c) for c in self.checks]}


def _missing(name: str, threshold: float, comparison: str, unit: str, what: str) -> Check:
    return Check(name, None, threshold, comparison, unit, False,
                 f"FAIL (missing metric): {what} is not in the report; a gate never passes on "
                 "an unmeasured metric")


def _bound(name: str, measured: float, threshold: float, comparison: str, unit: str,
           extra: str = "") -> Check:
    ok = measured <= threshold if comparison == "<=" else measured >= threshold
    op = comparison if ok else f"not {comparison}"
    msg = f"{'pass' if ok else 'FAIL'}: {measured:.4g}{unit} {op} {threshold:.4g}{unit}{extra}"
    return Check(name, measured, threshold, comparison, unit, ok, msg)


def _records(cand: CandidateReport, at: MetricAt) -> list[LatencyRecord]:
    return [r for r in cand.latency
            if r.key == at.runtime and (at.batch is None or r.batch == at.batch)]


def _where(at: MetricAt, batch: int | None = None) -> str:
    b = at.batch if batch is None else batch
    return f"{at.runtime} b{b}" if b is not None else f"{at.runtime} (any batch)"


def regression_noise_pct(old: LatencyRecord, new: LatencyRecord) -> float:
    """Timing noise of ``new.p50 / old.p50 - 1`` in percent: the two p50 confidence half-widths,
    relative to their medians, combined in quadrature.

    Reports without stored intervals fall back to the normal approximation of the median's
    standard error (1.2533 std / sqrt(n), times 1.96).
    """
    def rel_half_width(r: LatencyRecord) -> float:
        if r.p50_ci_low_ms is not None and r.p50_ci_high_ms is not None:
            hw = (r.p50_ci_high_ms - r.p50_ci_low_ms) / 2
        else:
            hw = 1.96 * 1.2533 * r.std_ms / math.sqrt(max(r.iterations, 1))
        return hw / r.p50_ms if r.p50_ms > 0 else 0.0

    return 100.0 * math.hypot(rel_half_width(old), rel_half_width(new))


def evaluate_gates(report: Report, spec: GateSpec, baseline: Report | None = None) -> GateResult:
    """Check ``spec`` on ``report`` (and ``baseline`` for the regression threshold).

    Raises:
        DeployKitError: no thresholds set, an unknown candidate, or a regression threshold
            without a baseline report (bad input: exit 2, not a failed gate).
    """
    if not spec.thresholds():
        raise DeployKitError("gate: no thresholds given; pass e.g. --max-accuracy-drop 1.0 "
                             "--min-speedup 1.5, or add a gates: section to the recipe")
    if not report.candidates:
        raise DeployKitError("gate: the report has no candidates; was the run interrupted?")
    names = [c.name for c in report.candidates]
    name = spec.candidate or names[-1]
    if name not in names:
        raise DeployKitError(f"gate: candidate {name!r} is not in the report; it has {names}")
    cand = report.candidate(name)
    base = report.candidates[0]
    checks: list[Check] = []

    if spec.max_accuracy_drop is not None:
        t = spec.max_accuracy_drop
        b1, c1 = base.artifact_top1_pct(), cand.artifact_top1_pct()
        if b1 is None or c1 is None:
            checks.append(_missing("max_accuracy_drop", t, "<=", " pts",
                                   f"top-1 of {'baseline' if b1 is None else name}"))
        else:
            checks.append(_bound("max_accuracy_drop", b1 - c1, t, "<=", " pts",
                                 f" (top-1 {c1:.2f}% vs baseline {b1:.2f}%)"))

    if spec.min_speedup is not None:
        at = spec.min_speedup
        recs = [r for r in _records(cand, at) if r.speedup_vs_baseline is not None]
        if not recs:
            checks.append(_missing(f"min_speedup[{_where(at)}]", at.value, ">=", "x",
                                   f"speed-up of {name} on {_where(at)}"))
        for r in recs:
            checks.append(_bound(f"min_speedup[{_where(at, r.batch)}]", r.speedup_vs_baseline,
                                 at.value, ">=", "x", f" (p50 {r.p50_ms:.3f} ms)"))

    if spec.min_speedup_over_previous is not None:
        checks += _previous_checks(report, cand, spec.min_speedup_over_previous)

    if spec.max_latency_ms is not None:
        at = spec.max_latency_ms
        recs = _records(cand, at)
        label = f"max_latency_ms[{at.percentile} {{}}]"
        if not recs:
            checks.append(_missing(label.format(_where(at)), at.value, "<=", " ms",
                                   f"{at.percentile} latency of {name} on {_where(at)}"))
        for r in recs:
            checks.append(_bound(label.format(_where(at, r.batch)),
                                 getattr(r, f"{at.percentile}_ms"), at.value, "<=", " ms"))

    if spec.max_size_mb is not None:
        if cand.onnx_size_bytes is None:
            checks.append(_missing("max_size_mb", spec.max_size_mb, "<=", " MB",
                                   f"ONNX file size of {name}"))
        else:
            checks.append(_bound("max_size_mb", cand.onnx_size_bytes / 1e6, spec.max_size_mb,
                                 "<=", " MB"))

    if spec.max_latency_regression is not None:
        checks += _regression_checks(cand, spec.max_latency_regression, baseline)
    return GateResult(name, checks)


def _previous_checks(report: Report, cand: CandidateReport, at: MetricAt) -> list[Check]:
    """Speed-up of ``cand`` over the candidate before it, per measured batch."""
    index = [c.name for c in report.candidates].index(cand.name)
    label = "min_speedup_over_previous[{}]"
    if index == 0:
        return [_missing(label.format(_where(at)), at.value, ">=", "x",
                         f"a candidate before {cand.name!r} (it is the baseline)")]
    prev = report.candidates[index - 1]
    pairs = [(p, n) for n in _records(cand, at) for p in _records(prev, at) if p.batch == n.batch]
    if not pairs:
        return [_missing(label.format(_where(at)), at.value, ">=", "x",
                         f"p50 of {cand.name} and {prev.name} on {_where(at)}")]
    return [_bound(label.format(_where(at, n.batch)), p.p50_ms / n.p50_ms, at.value, ">=", "x",
                   f" ({n.p50_ms:.3f} ms vs {prev.name} {p.p50_ms:.3f} ms)") for p, n in pairs]


def _regression_checks(cand: CandidateReport, at: MetricAt, baseline: Report | None
                       ) -> list[Check]:
    if baseline is None:
        raise DeployKitError("gate: max_latency_regression needs an earlier report: pass "
                             "--baseline OLD/report.json or set gates.baseline in the recipe")
    label = "max_latency_regression[{}]"
    old_names = [c.name for c in baseline.candidates]
    if cand.name not in old_names:
        return [_missing(label.format(_where(at)), at.value, "<=", "%",
                         f"candidate {cand.name!r} in the baseline report (it has {old_names})")]
    old = baseline.candidate(cand.name)
    pairs = [(o, n) for n in _records(cand, at) for o in _records(old, at)
             if o.batch == n.batch]
    if not pairs:
        return [_missing(label.format(_where(at)), at.value, "<=", "%",
                         f"p50 of {cand.name} on {_where(at)} in both reports")]
    checks = []
    for o, n in pairs:
        change = 100.0 * (n.p50_ms / o.p50_ms - 1.0)
        noise = regression_noise_pct(o, n)
        beyond = change - noise  # the part of the slowdown the timing noise cannot explain
        ok = beyond <= at.value
        msg = (f"{'pass' if ok else 'FAIL'}: p50 {o.p50_ms:.3f} -> {n.p50_ms:.3f} ms "
               f"({change:+.1f}%, noise ±{noise:.1f}%); slowdown beyond noise "
               f"{max(beyond, 0.0):.1f}% {'<=' if ok else '>'} {at.value:.4g}%")
        checks.append(Check(label.format(_where(at, n.batch)), change, at.value, "<=", "%", ok,
                            msg))
    return checks


def junit_xml(result: GateResult, suite: str = "deploykit.gate") -> str:
    """JUnit XML with one ``testcase`` per check; failed checks carry a ``failure`` element."""
    failures = sum(not c.passed for c in result.checks)
    root = ET.Element("testsuites", name=suite, tests=str(len(result.checks)),
                      failures=str(failures))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(result.checks)),
                       failures=str(failures), errors="0", skipped="0")
    for c in result.checks:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{result.candidate}", name=c.name,
                           time="0")
        if not c.passed:
            f = ET.SubElement(tc, "failure", message=c.message, type="GateFailed")
            f.text = c.message
        else:
            ET.SubElement(tc, "system-out").text = c.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def write_junit(result: GateResult, path: str | Path) -> Path:
    """Atomically write :func:`junit_xml` to ``path``."""
    return write_text(path, junit_xml(result))


def load_baseline(spec: GateSpec) -> Report | None:
    """The earlier report that ``spec.baseline`` names, if any.

    Raises:
        DeployKitError: it is missing or unreadable.
    """
    return None if spec.baseline is None else load_report(spec.baseline, "gates.baseline")


def apply_gate(report: Report, spec: GateSpec, baseline: Report | None = None,
               junit: str | Path | None = None) -> GateResult:
    """Evaluate ``spec`` on ``report``, print the checks, and write them as JUnit XML.

    Returns:
        The result; its ``exit_code`` is what CI should exit with (0 pass, 1 fail).

    Raises:
        DeployKitError: bad input (see :func:`evaluate_gates`).
    """
    result = evaluate_gates(report, spec, baseline)
    print_table(Table(
        f"gate on candidate {result.candidate!r}: {'PASSED' if result.passed else 'FAILED'}",
        ("check", "measured", "threshold", "verdict"),
        [(c.name, "missing" if c.measured is None else f"{c.measured:.4g}{c.unit}",
          f"{c.comparison} {c.threshold:.4g}{c.unit}", c.message) for c in result.checks]))
    if junit is not None:
        write_junit(result, junit)
        log(f"gate: JUnit XML in {junit}")
    failed = [c.name for c in result.checks if not c.passed]
    log("gate: passed" if result.passed else f"gate: FAILED ({', '.join(failed)})")
    return result


def gate_spec(report: Report, overrides: Mapping[str, Any]) -> GateSpec:
    """The ``gates:`` section stored in ``report``'s recipe, with ``overrides`` (keys of
    :class:`GateSpec`; ``None`` values are ignored) on top.

    Raises:
        DeployKitError: a threshold is invalid.
    """
    raw = dict((report.recipe or {}).get("gates") or {})
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return GateSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise DeployKitError(f"gate thresholds: {err['loc']}: {err['msg']}") from e


def gate_report(path: str | Path, overrides: Mapping[str, Any],
                junit: str | Path | None = None) -> GateResult:
    """Gate a written ``report.json`` (or run folder): the ``deploykit gate`` command.

    Raises:
        DeployKitError: unreadable report or baseline, invalid or no thresholds.
    """
    report = load_report(path)
    spec = gate_spec(report, overrides)
    return apply_gate(report, spec, load_baseline(spec), junit)
