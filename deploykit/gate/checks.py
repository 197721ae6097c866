"""The gate's checks: one :class:`Check` per threshold, runtime and batch, and the verdict.

A metric the report does not contain fails its check (fail closed) with a message naming it,
so a gate can never pass because something was not measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from deploykit.recipe import MetricAt
from deploykit.report import CandidateReport, LatencyRecord

__all__ = ["Check", "GateResult", "bound", "missing", "records", "where"]


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
    reference: str = ""   # what a comparison with an earlier report was judged against


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


def missing(name: str, threshold: float, comparison: str, unit: str, what: str) -> Check:
    return Check(name, None, threshold, comparison, unit, False,
                 f"FAIL (missing metric): {what} is not in the report; a gate never passes on "
                 "an unmeasured metric")


def bound(name: str, measured: float, threshold: float, comparison: str, unit: str,
           extra: str = "") -> Check:
    ok = measured <= threshold if comparison == "<=" else measured >= threshold
    op = comparison if ok else f"not {comparison}"
    msg = f"{'pass' if ok else 'FAIL'}: {measured:.4g}{unit} {op} {threshold:.4g}{unit}{extra}"
    return Check(name, measured, threshold, comparison, unit, ok, msg)


def records(cand: CandidateReport, at: MetricAt) -> list[LatencyRecord]:
    return [r for r in cand.latency
            if r.key == at.runtime and (at.batch is None or r.batch == at.batch)]


def where(at: MetricAt, batch: int | None = None) -> str:
    b = at.batch if batch is None else batch
    return f"{at.runtime} b{b}" if b is not None else f"{at.runtime} (any batch)"


