"""Distillation losses, each a function of student and teacher tensors.

Every function returns a scalar averaged over the batch so the recipe weights do not depend
on the batch size. The teacher side is always used as a constant (callers pass it detached or
computed under ``no_grad``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["attention_loss", "attention_map", "ensemble_kd", "fsp_loss", "fsp_matrix",
           "gaussian_negative_mean", "hint_loss", "margin_from_bn", "match_spatial",
           "partial_l2", "soft_kl"]


def soft_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): ``T^2 * KL(p_t || softmax(z_s / T))``, mean over the batch.

    ``teacher_probs`` are already softened at ``temperature`` (one teacher or an ensemble's
    average); the ``T^2`` keeps the gradient scale independent of ``T``.
    """
    t = temperature
    log_q = F.log_softmax(student_logits / t, dim=1)
    return F.kl_div(log_q, teacher_probs, reduction="batchmean") * (t * t)


def ensemble_kd(student_logits: torch.Tensor, teacher_logits: list[torch.Tensor],
                temperature: float) -> torch.Tensor:
    """KD against the average of several teachers' softened probabilities."""
    probs = torch.stack([F.softmax(z / temperature, dim=1) for z in teacher_logits]).mean(0)
    return soft_kl(student_logits, probs, temperature)


def match_spatial(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Resize a student feature map to the teacher's height and width (bilinear) if they differ
    (student and teacher at different input resolutions)."""
    if student.shape[-2:] == teacher.shape[-2:]:
        return student
    return F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)


def hint_loss(adapted_student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """FitNets (Romero et al. 2015): ``1/2 ||u_t - r(v_s)||^2`` per image, batch mean.

    ``adapted_student`` is ``r(v_s)``, the student's guided feature after the regressor.
    """
    diff = adapted_student - teacher
    return 0.5 * diff.pow(2).flatten(1).sum(1).mean()


def attention_map(feature: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017): ``sum_c |F_c|^p`` flattened and L2-normalised per image."""
    return F.normalize(feature.abs().pow(p).sum(1).flatten(1), dim=1)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Squared distance between normalised attention maps, averaged over images and positions
    (the authors' normalisation, which their weight beta/2 = 500 assumes).

    Channel counts may differ (the map sums over channels); spatial sizes are matched first.
    """
    s = attention_map(match_spatial(student, teacher), p)
    t = attention_map(teacher, p)
    return (s - t).pow(2).mean()


def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Yim et al. (2017): ``G_ij = 1/(h*w) sum_{s,t} F1[s,t,i] F2[s,t,j]``, shape (N, C1, C2).

    The larger map is average-pooled to the smaller one's size first.
    """
    if first.shape[-2:] != second.shape[-2:]:
        size = min(first.shape[-2], second.shape[-2]), min(first.shape[-1], second.shape[-1])
        first, second = F.adaptive_avg_pool2d(first, size), F.adaptive_avg_pool2d(second, size)
    h, w = first.shape[-2:]
    return torch.einsum("nihw,njhw->nij", first, second) / (h * w)


def fsp_loss(student_pair: tuple[torch.Tensor, torch.Tensor],
             teacher_pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Squared L2 between the student's and teacher's FSP matrices, summed, batch mean."""
    gs, gt = fsp_matrix(*student_pair), fsp_matrix(*teacher_pair)
    if gs.shape != gt.shape:
        raise ValueError(f"FSP matrices differ in shape ({tuple(gs.shape[1:])} vs "
                         f"{tuple(gt.shape[1:])}); adapt the student's channels first")
    return (gs - gt).pow(2).flatten(1).sum(1).mean()


def gaussian_negative_mean(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``E[x | x < 0]`` for ``x ~ N(mean, std^2)``: ``mean - std * phi(mean/std) / Phi(-mean/std)``.

    Where ``Phi(-mean/std)`` is tiny (almost no negative mass) the formula is unstable; like the
    authors' code, those channels get ``-3 * std``.
    """
    std = std.abs().clamp_min(1e-12)
    z = mean / std
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = torch.special.ndtr(-z)
    m = mean - std * pdf / cdf.clamp_min(1e-12)
    return torch.where(cdf > 1e-3, m, -3 * std)


def margin_from_bn(bn: nn.BatchNorm2d) -> torch.Tensor:
    """Heo et al. (2019) margin per channel from the BatchNorm before the ReLU: its output is
    ``N(bias, weight^2)`` per channel, so the margin is ``E[x | x < 0]`` of that Gaussian."""
    if bn.weight is None or bn.bias is None:
        raise ValueError("margin ReLU needs an affine BatchNorm (weight and bias)")
    return gaussian_negative_mean(bn.bias.detach().float(), bn.weight.detach().float())


def partial_l2(student: torch.Tensor, teacher: torch.Tensor, margin: torch.Tensor
               ) -> torch.Tensor:
    """Heo et al. (2019): teacher transformed by the margin ReLU ``max(t, m)``; the squared error
    counts except where ``student <= teacher <= 0``. Summed per image, batch mean."""
    t = torch.maximum(teacher, margin.view(1, -1, 1, 1).to(teacher.dtype))
    mask = (student > t) | (t > 0)
    return ((student - t).pow(2) * mask).flatten(1).sum(1).mean()
