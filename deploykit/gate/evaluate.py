"""The CI gate: thresholds on a report (and an earlier report) -> checks, verdict, JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deploykit.errors import DeployKitError
from deploykit.gate.checks import Check, GateResult, bound, missing, records, where
from deploykit.gate.regression import regression_checks
from deploykit.host.progress import Table, log, print_table
from deploykit.recipe import GateSpec, MetricAt
from deploykit.report import CandidateReport, Report, load_report, metric_label
from deploykit.runfiles.atomic import write_text

__all__ = ["apply_gate", "evaluate_gates", "gate_report", "gate_spec", "junit_xml",
           "load_baseline", "write_junit"]


def evaluate_gates(report: Report, spec: GateSpec, baseline: Report | None = None,
                   dirs: tuple[Path | None, Path | None] = (None, None)) -> GateResult:
    """Check ``spec`` on ``report`` (and ``baseline`` for the regression threshold; ``dirs``:
    the folders of ``baseline`` and ``report``, whose ONNX files a regression check re-times).

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

    for key, metric, unit in (("max_accuracy_drop", "top1_pct", "%"),
                              ("max_map_drop", "map50_pct", "")):
        t, what = getattr(spec, key), metric_label(metric)
        if t is None:
            continue
        b1, c1 = base.artifact(metric), cand.artifact(metric)
        if b1 is None or c1 is None:
            checks.append(missing(key, t, "<=", " pts",
                                   f"{what} of {'baseline' if b1 is None else name}"))
        else:
            checks.append(bound(key, b1 - c1, t, "<=", " pts",
                                 f" ({what} {c1:.2f}{unit} vs baseline {b1:.2f}{unit})"))

    if spec.min_speedup is not None:
        at = spec.min_speedup
        recs = [r for r in records(cand, at) if r.speedup_vs_baseline is not None]
        if not recs:
            checks.append(missing(f"min_speedup[{where(at)}]", at.value, ">=", "x",
                                   f"speed-up of {name} on {where(at)}"))
        for r in recs:
            checks.append(bound(f"min_speedup[{where(at, r.batch)}]", r.speedup_vs_baseline,
                                 at.value, ">=", "x", f" (p50 {r.p50_ms:.3f} ms)"))

    if spec.min_speedup_over_previous is not None:
        checks += _previous_checks(report, cand, spec.min_speedup_over_previous)

    if spec.max_latency_ms is not None:
        at = spec.max_latency_ms
        recs = records(cand, at)
        label = f"max_latency_ms[{at.percentile} {{}}]"
        if not recs:
            checks.append(missing(label.format(where(at)), at.value, "<=", " ms",
                                   f"{at.percentile} latency of {name} on {where(at)}"))
        for r in recs:
            checks.append(bound(label.format(where(at, r.batch)),
                                 getattr(r, f"{at.percentile}_ms"), at.value, "<=", " ms"))

    if spec.max_size_mb is not None:
        if cand.onnx_size_bytes is None:
            checks.append(missing("max_size_mb", spec.max_size_mb, "<=", " MB",
                                   f"ONNX file size of {name}"))
        else:
            checks.append(bound("max_size_mb", cand.onnx_size_bytes / 1e6, spec.max_size_mb,
                                 "<=", " MB"))

    if spec.max_latency_regression is not None:
        checks += regression_checks(report, cand, spec.max_latency_regression, baseline, dirs)
    return GateResult(name, checks)


def _previous_checks(report: Report, cand: CandidateReport, at: MetricAt) -> list[Check]:
    """Speed-up of ``cand`` over the candidate before it, per measured batch."""
    index = [c.name for c in report.candidates].index(cand.name)
    label = "min_speedup_over_previous[{}]"
    if index == 0:
        return [missing(label.format(where(at)), at.value, ">=", "x",
                         f"a candidate before {cand.name!r} (it is the baseline)")]
    prev = report.candidates[index - 1]
    pairs = [(p, n) for n in records(cand, at) for p in records(prev, at) if p.batch == n.batch]
    if not pairs:
        return [missing(label.format(where(at)), at.value, ">=", "x",
                         f"p50 of {cand.name} and {prev.name} on {where(at)}")]
    return [bound(label.format(where(at, n.batch)), p.p50_ms / n.p50_ms, at.value, ">=", "x",
                   f" ({n.p50_ms:.3f} ms vs {prev.name} {p.p50_ms:.3f} ms)") for p, n in pairs]


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
               junit: str | Path | None = None, report_dir: Path | None = None) -> GateResult:
    """Evaluate ``spec`` on ``report`` (written in ``report_dir``, if it is), print the checks,
    and write them as JUnit XML.

    Returns:
        The result; its ``exit_code`` is what CI should exit with (0 pass, 1 fail).

    Raises:
        DeployKitError: bad input (see :func:`evaluate_gates`).
    """
    dirs = (None if spec.baseline is None else _folder(spec.baseline), report_dir)
    result = evaluate_gates(report, spec, baseline, dirs)
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
    return apply_gate(report, spec, load_baseline(spec), junit, _folder(Path(path)))


def _folder(report_path: Path) -> Path:
    """The run folder of a report given as its file or its folder."""
    return report_path if report_path.is_dir() else report_path.parent
