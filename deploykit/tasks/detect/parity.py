"""Parity of detections: two runs of one detector (PyTorch and its exported artifact) give the
same boxes, scores and labels as sets.

Detections are not compared by position: among tied scores the two runtimes may order them
differently; and when a run was cut at the detector's ``top_k`` detections, tied scores at the
cut decide differently which are kept, so detections scored at or below the higher of the two
runs' lowest scores (plus ``1e-5``) are left out of the comparison on both sides. Each reference
detection is then matched greedily, highest score first, to the unmatched detection of the
other run with the same label and the highest IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DetectionParity", "match_detections"]


@dataclass(frozen=True)
class DetectionParity:
    """How two sets of detections agree: the fraction of reference detections matched at
    ``iou`` or better (same label), the lowest IoU and the largest score difference among the
    matches, and the two counts."""

    matched_fraction: float
    min_iou: float
    max_score_diff: float
    count_ref: int
    count_other: int

    def ok(self, min_matched: float = 0.99, min_iou: float = 0.99,
           max_score_diff: float = 1e-3) -> bool:
        return (self.matched_fraction >= min_matched and self.min_iou >= min_iou
                and self.max_score_diff <= max_score_diff)


def match_detections(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor],
                     iou: float = 0.5, top_k: int | None = None, min_score: float = 0.0
                     ) -> DetectionParity:
    """Match ``other``'s detections to ``ref``'s (dicts of ``boxes``, ``scores``, ``labels``);
    ``top_k``: the most detections the detector keeps per image (``detections_per_img``);
    ``min_score``: match only ``ref``'s detections scored above it, against ``other``'s above
    half of it (a box at the threshold may score just below it in the other run)."""
    from torchvision.ops import box_iou

    cut = min_score
    full = top_k is not None and top_k in (len(ref["scores"]), len(other["scores"]))
    if full and len(ref["scores"]) and len(other["scores"]):
        cut = max(cut, float(ref["scores"].min()) + 1e-5, float(other["scores"].min()) + 1e-5)
    if cut > 0:
        ref, other = ({k: v[d["scores"] > c] for k, v in d.items()}
                      for d, c in ((ref, cut), (other, cut - min_score / 2)))
    n_ref, n_other = len(ref["scores"]), len(other["scores"])
    if n_ref == 0:
        return DetectionParity(1.0 if n_other == 0 else 0.0, 1.0, 0.0, 0, n_other)
    ious = box_iou(ref["boxes"].float(), other["boxes"].float()) if n_other else \
        torch.zeros(n_ref, 0)
    ious[ref["labels"][:, None] != other["labels"][None, :]] = -1.0
    taken = torch.zeros(n_other, dtype=torch.bool)
    matched, worst_iou, worst_score = 0, 1.0, 0.0
    for i in torch.argsort(ref["scores"], descending=True).tolist():
        if n_other == 0:
            break
        row = ious[i].masked_fill(taken, -1.0)
        j = int(row.argmax())
        if row[j] < iou:
            continue
        taken[j] = True
        matched += 1
        worst_iou = min(worst_iou, float(row[j]))
        worst_score = max(worst_score, abs(float(ref["scores"][i] - other["scores"][j])))
    return DetectionParity(matched / n_ref, worst_iou if matched else 0.0, worst_score, n_ref,
                           n_other)
