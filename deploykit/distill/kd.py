"""Knowledge-distillation losses shared by the stages that train against a float teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.distill.losses import ensemble_kd
from deploykit.distill.teacher import Teacher
from deploykit.models import split_outputs

__all__ = ["hinton_kd", "kd_loss_fn"]


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): T^2 * KL(softmax(t / T) || softmax(s / T)), batch mean."""
    return ensemble_kd(student_logits, [teacher_logits], temperature)


def kd_loss_fn(teacher: nn.Module, alpha: float, temperature: float,
               label_smoothing: float = 0.0):
    """A training-loop loss: ``(1 - alpha) * CE(labels) + alpha * hinton_kd(teacher)``.

    The teacher is a frozen copy of ``teacher`` (eval mode, no gradients) with BatchNorm folded
    into its convolutions (:meth:`Teacher.optimize_for_logits`): only its logits are used.
    """
    frozen = Teacher([teacher])
    frozen.optimize_for_logits()

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        out = split_outputs(model(x))[0]
        ce = F.cross_entropy(out, y, label_smoothing=label_smoothing)
        kd = hinton_kd(out, frozen(x)[0], temperature)
        return {"loss": (1 - alpha) * ce + alpha * kd, "ce": ce.detach(), "kd": kd.detach()}

    return loss
