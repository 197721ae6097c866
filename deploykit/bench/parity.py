"""Numerical parity: the same inputs through a reference and a candidate runner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from deploykit.errors import ParityError
from deploykit.runtimes import Runner

__all__ = ["ParityResult", "check_parity", "compare_outputs", "noise_floor"]


@dataclass(frozen=True)
class ParityResult:
    max_abs_error: float
    max_rel_error: float
    top1_agreement: float
    samples: int
    max_error_vs_range: float = 0.0  # max abs error / max |reference logit|
    # agreement counting a changed prediction as agreeing when the reference scored the
    # candidate's class within the error limit of its own top class (a near-tie)
    top1_agreement_beyond_ties: float | None = None
    # the reference against itself on inputs moved by a rounding-level amount (max abs error /
    # max |logit|, top-1 agreement): how far rounding alone moves this model's output
    noise_floor_vs_range: float | None = None
    noise_floor_top1_agreement: float | None = None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def compare_outputs(ref: np.ndarray, out: np.ndarray, tie_tolerance: float | None = None
                    ) -> ParityResult:
    """Max absolute/relative error and argmax agreement between two logit arrays.

    With ``tie_tolerance`` (an absolute logit difference) also the agreement beyond ties: a
    prediction that changed counts as agreeing when the reference scored the new class within
    ``tie_tolerance`` of its top class. A barely trained or random model has near-tied logits,
    and rounding within the error limit flips them; a wrong export still fails, on its error.
    """
    if ref.shape != out.shape:
        raise ParityError(f"output shapes differ: reference {ref.shape} vs candidate {out.shape}")
    diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
    rel = diff / np.maximum(np.abs(ref), 1e-6)
    agree = float((ref.argmax(1) == out.argmax(1)).mean()) if ref.ndim == 2 else 1.0
    span = max(float(np.abs(ref).max()), 1e-12)
    beyond = None
    if tie_tolerance is not None and ref.ndim == 2:
        chosen = ref[np.arange(len(ref)), out.argmax(1)]
        beyond = float((chosen >= ref.max(1) - tie_tolerance).mean())
    return ParityResult(float(diff.max()), float(rel.max()), agree, int(ref.shape[0]),
                        float(diff.max()) / span, beyond)


def noise_floor(reference: Runner, batches: Sequence[np.ndarray], refs: np.ndarray,
                nudge: float = 1e-5, seed: int = 0) -> ParityResult:
    """The reference against itself with every input moved by ``nudge`` times its largest
    magnitude (Gaussian): far below one INT8 step, so it only flips roundings that sit on a
    boundary, as an integer kernel's own rounding does. A stable model barely moves; one
    whose quantization noise compounds (random-weight EfficientNets with SiLU and
    squeeze-excitation) moves by as much as any runtime difference can."""
    rng = np.random.default_rng(seed)
    moved = np.concatenate([reference((b + nudge * float(np.abs(b).max()) * rng.standard_normal(
        b.shape)).astype(b.dtype)) for b in batches])
    return compare_outputs(refs, moved)


def check_parity(reference: Runner, candidate: Runner, batches: Sequence[np.ndarray],
                 max_abs_error: float | None = 1e-3, min_top1_agreement: float = 0.99,
                 what: str = "candidate", max_error_vs_range: float | None = None,
                 noise_floor_factor: float | None = None) -> ParityResult:
    """Run ``batches`` through both runners; raise if they disagree.

    The error passes when it is within *either* limit given: ``max_abs_error`` (absolute) or
    ``max_error_vs_range`` (divided by the largest reference logit: rounding noise grows with
    the logits, so a model with large logits needs it; a wrong export is off by far more).

    Args:
        reference: usually the PyTorch model.
        candidate: usually the exported artifact in its runtime.
        batches: float32 NCHW arrays (random and real images).
        max_abs_error: largest allowed absolute difference of any logit (None: not used).
        min_top1_agreement: smallest allowed fraction of equal argmax predictions, where a
            prediction that moved to a class the reference scored within the error limit of
            its top class (a near-tie) counts as equal.
        what: names the artifact in the error.
        max_error_vs_range: largest allowed error relative to the largest reference logit
            (None: not used).
        noise_floor_factor: also measure the reference's own :func:`noise_floor` and allow
            this many times its error (and its loss of top-1 agreement, doubled likewise);
            for quantized artifacts, whose integer kernels round differently from the
            simulation. None: not measured.

    Raises:
        ParityError: the error is beyond every limit given, or too few predictions agree (the
            message gives the numbers).
        ValueError: neither error limit is given.
    """
    if max_abs_error is None and max_error_vs_range is None:
        raise ValueError("check_parity needs max_abs_error, max_error_vs_range or both")
    refs = np.concatenate([reference(b) for b in batches])
    outs = np.concatenate([candidate(b) for b in batches])
    span = float(np.abs(refs).max()) if refs.size else 0.0
    floor = None
    if noise_floor_factor is not None and max_error_vs_range is not None:
        floor = noise_floor(reference, batches, refs)
        max_error_vs_range = max(max_error_vs_range,
                                 noise_floor_factor * floor.max_error_vs_range)
        min_top1_agreement = min(min_top1_agreement,
                                 1.0 - noise_floor_factor * (1.0 - floor.top1_agreement))
    tie = max(max_abs_error or 0.0, (max_error_vs_range or 0.0) * span)
    res = compare_outputs(refs, outs, tie)
    if floor is not None:
        res = replace(res, noise_floor_vs_range=floor.max_error_vs_range,
                      noise_floor_top1_agreement=floor.top1_agreement)
    within = ((max_abs_error is not None and res.max_abs_error <= max_abs_error)
              or (max_error_vs_range is not None and res.max_error_vs_range <= max_error_vs_range))
    if not (within and res.top1_agreement_beyond_ties >= min_top1_agreement):
        limits = [f"max abs error {res.max_abs_error:.3g} (limit {max_abs_error:g})"
                  for _ in [0] if max_abs_error is not None]
        limits += [f"max abs error / max |logit| {res.max_error_vs_range:.3g} (limit "
                   f"{max_error_vs_range:g})" for _ in [0] if max_error_vs_range is not None]
        raise ParityError(
            f"{what}: {candidate.runtime} output disagrees with {reference.runtime}: "
            f"{' and '.join(limits)}, top-1 agreement {res.top1_agreement:.2%} "
            f"({res.top1_agreement_beyond_ties:.2%} counting near-ties within the error limit "
            f"as agreeing; limit {min_top1_agreement:.0%}) over {res.samples} inputs"
            + ("" if floor is None else
               f" (limits widened to {noise_floor_factor:g}x the reference's own rounding noise: "
               f"{floor.max_error_vs_range:.3g} of the logit range, "
               f"{floor.top1_agreement:.0%} agreement)")
            + ". The "
            "export is wrong; the run stops before benchmarking it. Loosen export.onnx.parity "
            "only if the difference is expected (e.g. reduced precision)")
    return res
