"""Numerical parity: the same inputs through a reference and a candidate runner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from deploykit.errors import ParityError
from deploykit.runtimes import Runner

__all__ = ["ParityResult", "check_parity", "compare_outputs"]


@dataclass(frozen=True)
class ParityResult:
    max_abs_error: float
    max_rel_error: float
    top1_agreement: float
    samples: int
    max_error_vs_range: float = 0.0  # max abs error / max |reference logit|

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def compare_outputs(ref: np.ndarray, out: np.ndarray) -> ParityResult:
    """Max absolute/relative error and argmax agreement between two logit arrays."""
    if ref.shape != out.shape:
        raise ParityError(f"output shapes differ: reference {ref.shape} vs candidate {out.shape}")
    diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
    rel = diff / np.maximum(np.abs(ref), 1e-6)
    agree = float((ref.argmax(1) == out.argmax(1)).mean()) if ref.ndim == 2 else 1.0
    span = max(float(np.abs(ref).max()), 1e-12)
    return ParityResult(float(diff.max()), float(rel.max()), agree, int(ref.shape[0]),
                        float(diff.max()) / span)


def check_parity(reference: Runner, candidate: Runner, batches: Sequence[np.ndarray],
                 max_abs_error: float = 1e-3, min_top1_agreement: float = 0.99,
                 what: str = "candidate", relative: bool = False) -> ParityResult:
    """Run ``batches`` through both runners; raise if they disagree.

    Args:
        reference: usually the PyTorch model.
        candidate: usually the exported artifact in its runtime.
        batches: float32 NCHW arrays (random and real images).
        max_abs_error: largest allowed absolute difference of any logit.
        min_top1_agreement: smallest allowed fraction of equal argmax predictions.
        what: names the artifact in the error.
        relative: judge ``max_abs_error`` against the error divided by the largest reference
            logit (for quantized artifacts, whose error scales with the logits).

    Raises:
        ParityError: either threshold is breached (the message gives both numbers).
    """
    refs = np.concatenate([reference(b) for b in batches])
    outs = np.concatenate([candidate(b) for b in batches])
    res = compare_outputs(refs, outs)
    err = res.max_error_vs_range if relative else res.max_abs_error
    if not (err <= max_abs_error and res.top1_agreement >= min_top1_agreement):
        kind = "max abs error / max |logit|" if relative else "max abs error"
        raise ParityError(
            f"{what}: {candidate.runtime} output disagrees with {reference.runtime}: {kind} "
            f"{err:.3g} (limit {max_abs_error:g}), top-1 agreement "
            f"{res.top1_agreement:.2%} (limit {min_top1_agreement:.0%}) over {res.samples} "
            "inputs. The export is wrong; the run stops before benchmarking it. Loosen "
            "export.onnx.parity only if the difference is expected (e.g. reduced precision)")
    return res
