"""The latency-regression check: is the candidate slower than in an earlier report, beyond the
timing noise, and judged against a reference that a slower machine cannot fool?

The reference, best first (the check's ``reference`` says which was used):

1. both ONNX files (this report's and the earlier one's) re-timed in this process in adjacent
   pairs (the change is the median of the pairs' ratios), so a machine that is slower now
   slows both alike;
2. the stored latencies, the earlier one scaled by the ratio of the two reports' yardsticks
   (a fixed workload timed beside every benchmark);
3. the stored latencies as they are, which a uniformly slower machine reads as a regression.
"""

from __future__ import annotations

import math
from pathlib import Path

from deploykit.bench import retime_pair
from deploykit.errors import DeployKitError
from deploykit.gate.checks import Check, missing, records, where
from deploykit.recipe import MetricAt
from deploykit.report import CandidateReport, LatencyRecord, Report

__all__ = ["regression_checks", "regression_noise_pct"]


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


def _onnx_pair(old: CandidateReport, new: CandidateReport, dirs: tuple[Path | None, Path | None]
               ) -> tuple[Path, Path] | None:
    """The earlier and the current ONNX file of the candidate, if both are on disk."""
    old_dir, new_dir = dirs
    if old_dir is None or new_dir is None or not old.onnx_file or not new.onnx_file:
        return None
    pair = (old_dir / old.onnx_file, new_dir / new.onnx_file)
    return pair if all(p.is_file() for p in pair) else None


RETIMED = "re-timed: both ONNX files, in adjacent pairs, in this process"
SCALED = "stored p50s, the earlier one scaled by the reports' machine yardsticks"
STORED = ("stored p50s as measured (no ONNX files or yardsticks to compare with: a slower "
          "machine reads as a regression)")


def regression_checks(report: Report, cand: CandidateReport, at: MetricAt,
                      baseline: Report | None,
                      dirs: tuple[Path | None, Path | None] = (None, None)) -> list[Check]:
    """One check per batch: ``cand``'s p50 against the same candidate in ``baseline``.

    Args:
        dirs: the folders of ``baseline`` and ``report`` (where their ONNX files are), for
            re-timing; the stored latencies are used when they are not given or not there.
    """
    if baseline is None:
        raise DeployKitError("gate: max_latency_regression needs an earlier report: pass "
                             "--baseline OLD/report.json or set gates.baseline in the recipe")
    label = "max_latency_regression[{}]"
    old_names = [c.name for c in baseline.candidates]
    if cand.name not in old_names:
        return [missing(label.format(where(at)), at.value, "<=", "%",
                        f"candidate {cand.name!r} in the baseline report (it has {old_names})")]
    old = baseline.candidate(cand.name)
    pairs = [(o, n) for n in records(cand, at) for o in records(old, at)
             if o.batch == n.batch]
    if not pairs:
        return [missing(label.format(where(at)), at.value, "<=", "%",
                        f"p50 of {cand.name} on {where(at)} in both reports")]
    files = _onnx_pair(old, cand, dirs) if at.runtime == "onnxruntime-cpu" else None
    # batch, old ms, new ms, change %, noise %
    measured: list[tuple[int, float, float, float, float]] = []
    if files is not None:
        reference = RETIMED
        timed = retime_pair(*files, [n.batch for _, n in pairs],
                            int(report.environment.get("threads") or 2))
        measured = [(b, t.old_ms, t.new_ms, 100.0 * (t.ratio - 1.0), t.ratio_ci_pct)
                    for b, t in timed.items()]
    else:
        old_y = baseline.environment.get("yardstick_ms")
        new_y = report.environment.get("yardstick_ms")
        scale = new_y / old_y if old_y and new_y else 1.0
        reference = f"{SCALED} (now {scale:.2f}x the earlier time)" if old_y and new_y \
            else STORED
        measured = [(n.batch, o.p50_ms * scale, n.p50_ms,
                     100.0 * (n.p50_ms / (o.p50_ms * scale) - 1.0), regression_noise_pct(o, n))
                    for o, n in pairs]
    checks = []
    for batch, old_ms, new_ms, change, noise in measured:
        beyond = change - noise  # the part of the slowdown the timing noise cannot explain
        ok = beyond <= at.value
        msg = (f"{'pass' if ok else 'FAIL'}: p50 {old_ms:.3f} -> {new_ms:.3f} ms "
               f"({change:+.1f}%, noise ±{noise:.1f}%); slowdown beyond noise "
               f"{max(beyond, 0.0):.1f}% {'<=' if ok else '>'} {at.value:.4g}% [{reference}]")
        checks.append(Check(label.format(where(at, batch)), change, at.value, "<=", "%", ok,
                            msg, reference))
    return checks
