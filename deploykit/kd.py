"""Knowledge-distillation losses shared by the stages that train against a float teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.distill.losses import ensemble_kd

__all__ = ["hinton_kd", "kd_loss_fn"]


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): T^2 * KL(softmax(t / T) || softmax(s / T)), batch mean."""
    return ensemble_kd(student_logits, [teacher_logits], temperature)


def kd_loss_fn(teacher: nn.Module, alpha: float, temperature: float,
               label_smoothing: float = 0.0):
    """A training-loop loss: ``(1 - alpha) * CE(labels) + alpha * hinton_kd(teacher)``.

    The teacher runs in eval mode without gradients.
    """
    teacher.eval()

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        out = model(x)
        ce = F.cross_entropy(out, y, label_smoothing=label_smoothing)
        with torch.no_grad():
            t_out = teacher.to(x.device)(x)
        kd = hinton_kd(out, t_out, temperature)
        return {"loss": (1 - alpha) * ce + alpha * kd, "ce": ce.detach(), "kd": kd.detach()}

    return loss
