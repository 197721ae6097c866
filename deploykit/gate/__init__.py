"""The CI gate: thresholds on a report (and an earlier report) -> checks, verdict, JUnit XML.

Every threshold becomes one or more :class:`Check` rows (one per runtime and batch where that
applies); :mod:`deploykit.gate.regression` judges a latency regression against a reference a
slower machine cannot fool.
"""

from deploykit.gate.checks import Check, GateResult
from deploykit.gate.evaluate import (
    apply_gate,
    evaluate_gates,
    gate_report,
    gate_spec,
    junit_xml,
    load_baseline,
    write_junit,
)
from deploykit.gate.regression import regression_checks, regression_noise_pct

__all__ = ["Check", "GateResult", "apply_gate", "evaluate_gates", "gate_report", "gate_spec",
           "junit_xml", "load_baseline", "regression_checks", "regression_noise_pct",
           "write_junit"]
