"""Training objectives for SSD-family detectors: the detector's own loss (plain fine-tuning)
and Chen et al. (2017)'s distillation added to it.

torchvision's SSD computes its loss inside ``forward``; distillation needs what it computes on
the way (the head outputs of every anchor, which anchors are positive and their regression
targets, the backbone features), so :func:`ssd_pass` repeats that forward step by step with
torchvision's own parts (transform, anchor generator, matcher, box coder, ``compute_loss``).
The teacher sees the student's transformed images and must have the same anchors: the same
detector family at the same input size (its width or depth may differ).

Where the terms act:

- ``det_soft_ce`` on the anchors the hard classification loss uses (the positives and the
  3:1 hard negatives of SSD's sampling), normalised like it (sum over those anchors / number
  of positives), and mixed: ``mu * hard + (1 - mu) * soft``;
- ``det_bounded_reg`` on the positive anchors' box encodings, added to the smooth-L1 loss
  with weight ``bounded_weight``;
- ``det_hint`` between one backbone feature map of student and teacher through a
  :class:`~deploykit.tasks.detect.chen.HintAdapter`, per element (divided by the teacher
  map's size, so the weight does not depend on the layer), with weight ``hint_weight``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.errors import ModelError
from deploykit.tasks.detect.chen import HintAdapter, det_bounded_reg, det_hint, det_soft_ce
from deploykit.tasks.detect.models import backbone_features

__all__ = ["ChenTerms", "SsdPass", "check_chen_model", "chen_loss", "detector_loss",
           "hint_adapter", "ssd_pass"]


def detector_loss(model: nn.Module, images: list[torch.Tensor], targets: list[dict]
                  ) -> dict[str, torch.Tensor]:
    """Plain training: the sum of the losses a torchvision detector returns in train mode."""
    losses = model(images, targets)
    return {"loss": sum(losses.values()), **{k: v.detach() for k, v in losses.items()}}


@dataclass
class SsdPass:
    """One training forward of an SSD: its losses and what they were computed from."""

    losses: dict[str, torch.Tensor]          # "classification", "bbox_regression"
    cls_logits: torch.Tensor                 # (B, A, C)
    bbox_regression: torch.Tensor            # (B, A, 4)
    features: list[torch.Tensor]             # the backbone's feature maps
    inputs: torch.Tensor                     # the transformed batch (B, 3, H, W)
    positive: torch.Tensor                   # (B, A) bool
    reg_targets: torch.Tensor                # (P, 4): encodings of the P positive anchors
    sampled: torch.Tensor                    # (B, A) bool: positives + hard negatives


def check_chen_model(model: nn.Module, role: str) -> None:
    """Refuse a ``role`` (student or teacher) the Chen terms are not built for.

    Raises:
        ModelError: ``model`` is not an SSD-family detector.
    """
    needed = ("transform", "backbone", "head", "anchor_generator", "proposal_matcher",
              "box_coder", "neg_to_pos_ratio")
    if not all(hasattr(model, a) for a in needed):
        raise ModelError(f"distill: the {role} is a {type(model).__name__}; the Chen terms "
                         "are implemented for SSD-family detectors (ssdlite320_mobilenet_v3_"
                         "large, torchvision SSD); use plain fine-tuning (no det_* terms) for "
                         "other detectors")


def ssd_pass(model: nn.Module, images: list[torch.Tensor], targets: list[dict]) -> SsdPass:
    """The training forward of torchvision SSD ``model``, keeping its intermediate values."""
    from torchvision.ops import boxes as box_ops

    check_chen_model(model, "student")
    batch, targets = model.transform(images, targets)
    features = backbone_features(model, batch.tensors)
    head = model.head(features)
    anchors = model.anchor_generator(batch, features)
    matched = []
    for a, t in zip(anchors, targets, strict=True):
        if t["boxes"].numel() == 0:
            matched.append(torch.full((len(a),), -1, dtype=torch.int64, device=a.device))
        else:
            matched.append(model.proposal_matcher(box_ops.box_iou(t["boxes"], a)))
    losses = model.compute_loss(targets, head, anchors, matched)
    positive = torch.stack([m >= 0 for m in matched])
    reg_targets = torch.cat([model.box_coder.encode_single(t["boxes"][m[m >= 0]], a[m >= 0])
                             for a, t, m in zip(anchors, targets, matched, strict=True)])
    with torch.no_grad():   # SSD's hard-negative sampling: the highest-loss backgrounds
        logits = head["cls_logits"]
        cls_t = torch.zeros(positive.shape, dtype=torch.int64, device=logits.device)
        for i, (t, m) in enumerate(zip(targets, matched, strict=True)):
            cls_t[i, m >= 0] = t["labels"][m[m >= 0]]
        ce = F.cross_entropy(logits.flatten(0, 1), cls_t.flatten(), reduction="none")
        neg = ce.view(positive.shape).masked_fill(positive, -float("inf"))
        rank = neg.argsort(1, descending=True).argsort(1)
        sampled = positive | (rank < model.neg_to_pos_ratio * positive.sum(1, keepdim=True))
    return SsdPass(losses=losses, cls_logits=head["cls_logits"],
                   bbox_regression=head["bbox_regression"], features=features,
                   inputs=batch.tensors, positive=positive, reg_targets=reg_targets,
                   sampled=sampled)


@dataclass(frozen=True)
class ChenTerms:
    """Weights of the Chen terms; a weight of 0 (or ``mu = 1``) leaves that term out."""

    mu: float = 1.0                 # hard share of the classification loss (1: no soft term)
    temperature: float = 1.0
    background_weight: float = 1.5
    bounded_weight: float = 0.0
    margin: float = 0.0
    hint_weight: float = 0.0
    hint_level: int = 0             # which backbone feature map carries the hint


def hint_adapter(student: nn.Module, teacher: nn.Module, image_size: int, level: int = 0
                 ) -> HintAdapter:
    """The 1x1 adaptation layer from the student's feature map ``level`` to the teacher's."""
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        fs, ft = backbone_features(student.eval(), x), backbone_features(teacher.eval(), x)
    if level >= min(len(fs), len(ft)):
        raise ModelError(f"distill: hint level {level} but the student has {len(fs)} and the "
                         f"teacher {len(ft)} feature maps; choose a level below "
                         f"{min(len(fs), len(ft))}")
    return HintAdapter(fs[level].shape[1], ft[level].shape[1])


def chen_loss(teacher: nn.Module, terms: ChenTerms, adapter: HintAdapter | None = None) -> Any:
    """The loss function (``fit``'s ``loss_fn``) of Chen et al.'s distillation from
    ``teacher`` (kept in eval mode, no gradient); ``adapter`` is needed when
    ``terms.hint_weight > 0`` and must be trained beside the student."""
    check_chen_model(teacher, "teacher")
    if terms.hint_weight > 0 and adapter is None:
        raise ValueError("chen_loss: a hint weight needs the adaptation layer (hint_adapter)")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(model: nn.Module, images: list[torch.Tensor], targets: list[dict]
                ) -> dict[str, torch.Tensor]:
        sizes = [(m.transform.min_size, getattr(m.transform, "fixed_size", None))
                 for m in (model, teacher)]
        if sizes[0] != sizes[1]:
            raise ModelError(f"distill: the teacher resizes images to {sizes[1]} but the "
                             f"student to {sizes[0]}; the teacher needs the student's anchors "
                             "(same detector family and input size)")
        s = ssd_pass(model, images, targets)
        with torch.no_grad():
            t_feats = backbone_features(teacher, s.inputs)
            t_head = teacher.head(t_feats)
        if t_head["cls_logits"].shape != s.cls_logits.shape:
            raise ModelError(f"distill: teacher predictions {tuple(t_head['cls_logits'].shape)}"
                             f" vs student {tuple(s.cls_logits.shape)}: the teacher needs the "
                             "student's anchors and classes (same detector family and input "
                             "size)")
        hard, reg = s.losses["classification"], s.losses["bbox_regression"]
        out = {"hard_cls": hard.detach(), "smooth_l1": reg.detach()}
        cls = hard
        if terms.mu < 1:
            rows = s.sampled
            soft = det_soft_ce(s.cls_logits[rows], t_head["cls_logits"][rows],
                               terms.temperature, terms.background_weight)
            soft = soft * rows.sum() / s.positive.sum().clamp(min=1)
            cls = terms.mu * hard + (1 - terms.mu) * soft
            out["det_soft_ce"] = soft.detach()
        loss = cls + reg
        if terms.bounded_weight > 0:
            b = det_bounded_reg(s.bbox_regression[s.positive], t_head["bbox_regression"][
                s.positive], s.reg_targets, terms.margin)
            loss = loss + terms.bounded_weight * b
            out["det_bounded_reg"] = b.detach()
        if terms.hint_weight > 0:
            t = t_feats[terms.hint_level]
            h = det_hint(adapter(s.features[terms.hint_level], tuple(t.shape[-2:])), t)
            h = h / t[0].numel()
            loss = loss + terms.hint_weight * h
            out["det_hint"] = h.detach()
        return {"loss": loss, **out}

    return loss_fn
