"""The three Chen et al. (2017) detection distillation terms against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from deploykit.tasks.detect.chen import HintAdapter, det_bounded_reg, det_hint, det_soft_ce


def test_soft_ce_weighs_the_background_class_and_matches_a_hand_computation():
    zs = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    zt = torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, 0.0]])

    def by_hand(temperature: float, w0: float) -> float:
        total = 0.0
        for s, t in zip(zs.tolist(), zt.tolist(), strict=True):
            es = [math.exp(v / temperature) for v in s]
            et = [math.exp(v / temperature) for v in t]
            ps, pt = [e / sum(es) for e in es], [e / sum(et) for e in et]
            w = [w0, 1.0, 1.0]
            total += -sum(w[c] * pt[c] * math.log(ps[c]) for c in range(3))
        return total / 2

    assert det_soft_ce(zs, zt).item() == pytest.approx(by_hand(1.0, 1.5), rel=1e-6)
    assert det_soft_ce(zs, zt, temperature=2.0, background_weight=1.0).item() == \
        pytest.approx(by_hand(2.0, 1.0), rel=1e-6)
    # the background weight matters exactly where the teacher believes in background
    assert det_soft_ce(zs, zt, background_weight=1.5) > det_soft_ce(zs, zt, background_weight=1.0)
    # gradients reach the student only
    zs_, zt_ = zs.clone().requires_grad_(), zt.clone().requires_grad_()
    det_soft_ce(zs_, zt_).backward()
    assert zs_.grad is not None and zt_.grad is None


def test_bounded_regression_pushes_the_student_only_while_it_is_not_better_than_the_teacher():
    y = torch.zeros(3, 4)
    teacher = torch.full((3, 4), 0.5)           # ||R_t - y||^2 = 1.0 per row
    student = torch.tensor([[1.0, 0, 0, 0],       # 1.0: not better than the teacher -> counts
                            [0.2, 0.2, 0, 0],     # 0.08: better by 0.92
                            [0.5, 0.5, 0.5, 0.0]])  # 0.75: better by 0.25
    # margin 0: row 1 (1.0 + 0 > 1.0 is false) and rows 2, 3 are all bounded -> 0
    assert det_bounded_reg(student, teacher, y, margin=0.0).item() == pytest.approx(0.0)
    # margin 0.5: row 1 (1.5 > 1) and row 3 (1.25 > 1) count, row 2 (0.58) does not
    assert det_bounded_reg(student, teacher, y, margin=0.5).item() == \
        pytest.approx((1.0 + 0.75) / 3)
    # a student better than the teacher by more than the margin everywhere: exactly zero
    assert det_bounded_reg(student * 0.1, teacher, y, margin=0.5).item() == 0.0
    empty = torch.zeros(0, 4)
    assert det_bounded_reg(empty, empty, empty).item() == 0.0


def test_hint_through_the_adapter_is_an_l2_per_image_and_starts_as_the_identity():
    s, t = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    adapter = HintAdapter(8, 8)                   # kept even when the channels match
    assert torch.allclose(adapter(s), s, atol=1e-6)
    assert det_hint(adapter(s), t).item() == pytest.approx(
        ((s - t) ** 2).sum().item() / 2, rel=1e-5)
    wide = HintAdapter(4, 8)
    out = wide(torch.randn(2, 4, 3, 3), size=(5, 5))
    assert out.shape == (2, 8, 5, 5)
    with pytest.raises(ValueError, match="adapter maps to the teacher"):
        det_hint(torch.randn(2, 4, 5, 5), t)
