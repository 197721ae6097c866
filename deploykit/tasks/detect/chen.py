"""The three distillation terms of Chen et al. (2017), "Learning Efficient Object Detection
Models with Knowledge Distillation", as functions of student, teacher and label tensors.

- :func:`det_soft_ce`: the class-weighted soft cross-entropy ``-sum_c w_c p_t,c log p_s,c`` over
  the predictions of anchors or proposals, with a larger weight on the background class
  (1.5 against 1 in the paper) against the flood of background boxes; the recipe mixes it with
  the detector's own (hard) classification loss: ``mu * hard + (1 - mu) * soft``.
- :func:`det_bounded_reg`: the teacher as an upper bound for box regression, not a target:
  ``||R_s - y||^2`` where ``||R_s - y||^2 + m > ||R_t - y||^2``, else 0, so a student that is
  better than the teacher by the margin ``m`` is no longer pushed; it is added to the
  detector's smooth-L1 loss on the labels.
- :func:`det_hint` with :class:`HintAdapter`: an L2 hint between intermediate features through
  an adaptation layer, a 1x1 convolution that is used also when the channel counts already
  match (the paper finds it helps).

Each returns a scalar averaged over its rows (predictions, positive boxes or images), so the
recipe's weights do not depend on the batch or the number of anchors. The teacher side is
used as a constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HintAdapter", "det_bounded_reg", "det_hint", "det_soft_ce"]


def det_soft_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                temperature: float = 1.0, background_weight: float = 1.5,
                background_index: int = 0) -> torch.Tensor:
    """Class-weighted soft cross-entropy between ``(N, C)`` class logits (``C`` counts the
    background), mean over the ``N`` rows: ``-sum_c w_c softmax(z_t/T)_c log softmax(z_s/T)_c``
    with ``w = background_weight`` for ``background_index`` and 1 for the other classes.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"det_soft_ce: logits of shape {tuple(student_logits.shape)} and "
                         f"{tuple(teacher_logits.shape)}; expected the same (N, C)")
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    w = torch.ones(student_logits.shape[1], dtype=log_p_s.dtype, device=log_p_s.device)
    w[background_index] = background_weight
    if len(student_logits) == 0:
        return student_logits.sum() * 0.0
    return -(p_t * log_p_s * w).sum(1).mean()


def det_bounded_reg(student_reg: torch.Tensor, teacher_reg: torch.Tensor, target: torch.Tensor,
                    margin: float = 0.0) -> torch.Tensor:
    """Teacher-bounded L2 regression over ``(N, 4)`` box encodings of the positive boxes,
    mean over ``N``: a row contributes ``||R_s - y||^2`` only while
    ``||R_s - y||^2 + margin > ||R_t - y||^2``."""
    if not student_reg.shape == teacher_reg.shape == target.shape:
        raise ValueError(f"det_bounded_reg: shapes {tuple(student_reg.shape)}, "
                         f"{tuple(teacher_reg.shape)}, {tuple(target.shape)}; expected equal")
    if len(student_reg) == 0:
        return student_reg.sum() * 0.0
    d_s = (student_reg - target).pow(2).flatten(1).sum(1)
    d_t = (teacher_reg.detach() - target).pow(2).flatten(1).sum(1)
    return torch.where(d_s + margin > d_t, d_s, torch.zeros_like(d_s)).mean()


def det_hint(adapted_student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L2 hint ``||r(V_s) - Z_t||^2`` per image (summed over channels and positions), mean
    over the batch; ``adapted_student`` is the student feature after :class:`HintAdapter`."""
    if adapted_student.shape != teacher.shape:
        raise ValueError(f"det_hint: adapted student {tuple(adapted_student.shape)} and teacher "
                         f"{tuple(teacher.shape)} differ; the adapter maps to the teacher's "
                         "channels and size")
    return (adapted_student - teacher.detach()).pow(2).flatten(1).sum(1).mean()


class HintAdapter(nn.Module):
    """The adaptation layer: a 1x1 convolution from the student's channels to the teacher's
    (also when they are equal), then a bilinear resize to the teacher's size if it differs.
    Initialised to the identity where the counts match, so training starts from the plain
    feature distance."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, 1)
        if student_channels == teacher_channels:
            with torch.no_grad():
                self.conv.weight.copy_(torch.eye(teacher_channels)[:, :, None, None])
                self.conv.bias.zero_()

    def forward(self, student: torch.Tensor, size: tuple[int, int] | None = None
                ) -> torch.Tensor:
        out = self.conv(student)
        if size is not None and tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out
