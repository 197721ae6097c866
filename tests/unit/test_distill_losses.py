"""Distillation losses against hand-computed values on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deploykit.distill import losses as L


def test_kd_is_t_squared_times_kl_by_definition():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    temp = 3.0
    p = torch.softmax(t / temp, 1)
    q = torch.softmax(s / temp, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    got = L.ensemble_kd(s, [t], temp)
    assert torch.allclose(got, temp ** 2 * kl, atol=1e-6)
    assert L.ensemble_kd(t, [t], temp) == pytest.approx(0.0, abs=1e-6)


def test_ensemble_kd_averages_probabilities_not_logits():
    s = torch.zeros(1, 2)
    t1, t2 = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    # the average of the two softened distributions is uniform, which the student already is
    assert L.ensemble_kd(s, [t1, t2], 2.0) == pytest.approx(0.0, abs=1e-6)
    assert L.ensemble_kd(s, [t1], 2.0) > 0.1


def test_hint_loss_is_half_squared_l2_per_image():
    s = torch.zeros(2, 1, 2, 2)
    t = torch.ones(2, 1, 2, 2)
    t[1] = 2.0
    # image 0: 1/2 * 4 * 1 = 2; image 1: 1/2 * 4 * 4 = 8; mean 5
    assert float(L.hint_loss(s, t)) == pytest.approx(5.0)


def test_attention_map_and_loss_by_hand():
    f = torch.zeros(1, 2, 1, 2)
    f[0, 0, 0, 0], f[0, 1, 0, 0], f[0, 0, 0, 1] = 1.0, 1.0, 2.0   # sum_c f^2 = [2, 4]
    a = L.attention_map(f)
    assert torch.allclose(a, torch.tensor([[2.0, 4.0]]) / math.sqrt(20))
    g = torch.zeros(1, 3, 1, 2)      # other channel count: maps still compare
    g[0, 2, 0, 1] = 5.0               # map [0, 25] -> normalised [0, 1]
    expected = ((2 / math.sqrt(20)) ** 2 + (4 / math.sqrt(20) - 1) ** 2) / 2   # 2 positions
    assert float(L.attention_loss(f, g)) == pytest.approx(expected, rel=1e-6)
    assert float(L.attention_loss(f, 3 * f)) == pytest.approx(0.0, abs=1e-7)


def test_fsp_matrix_by_hand_and_pooling():
    f1 = torch.arange(4.0).view(1, 1, 2, 2)          # one channel: 0 1 2 3
    f2 = torch.stack([torch.ones(2, 2), torch.arange(4.0).view(2, 2)]).unsqueeze(0)
    g = L.fsp_matrix(f1, f2)
    assert g.shape == (1, 1, 2)
    assert torch.allclose(g, torch.tensor([[[6 / 4, 14 / 4]]]))
    big = torch.ones(1, 1, 4, 4)
    assert torch.allclose(L.fsp_matrix(big, f2), torch.tensor([[[1.0, 1.5]]]))
    with pytest.raises(ValueError, match="adapt the student"):
        L.fsp_loss((f1, f2), (f2, f2))


def test_partial_l2_skips_student_below_non_positive_teacher():
    margin = torch.tensor([-1.0])
    t = torch.tensor([-0.5, -2.0, 1.0, -0.5]).view(1, 1, 1, 4)
    s = torch.tensor([-3.0, -1.5, 0.0, 0.5]).view(1, 1, 1, 4)
    # teacher after margin ReLU: [-0.5, -1.0, 1.0, -0.5]
    # pos 0: s <= t <= 0 -> 0; pos 1: s=-1.5 <= t=-1 <= 0 -> 0
    # pos 2: t > 0 -> (1 - 0)^2 = 1; pos 3: s > t -> (0.5 + 0.5)^2 = 1
    assert float(L.partial_l2(s, t, margin)) == pytest.approx(2.0)
    assert float(L.partial_l2(s.clamp(max=-3), t.clamp(max=-0.1), margin)) == 0.0


@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 1.0), (0.5, 2.0), (-1.0, 0.5), (2.0, 1.5)])
def test_margin_matches_monte_carlo_conditional_mean(mu, sigma):
    gen = torch.Generator().manual_seed(0)
    x = mu + sigma * torch.randn(2_000_000, generator=gen, dtype=torch.float64)
    mc = float(x[x < 0].mean())
    got = float(L.gaussian_negative_mean(torch.tensor(mu), torch.tensor(sigma)))
    assert got == pytest.approx(mc, abs=0.01 * sigma + 1e-3)


def test_margin_from_batchnorm_uses_its_affine_parameters():
    bn = nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.5]))
    m = L.margin_from_bn(bn)
    assert m[0] == pytest.approx(-math.sqrt(2 / math.pi), rel=1e-5)   # half-normal mean
    assert torch.allclose(m, L.gaussian_negative_mean(bn.bias, bn.weight))
    # almost no negative mass: the authors' fallback of -3 sigma
    assert float(L.gaussian_negative_mean(torch.tensor(10.0), torch.tensor(1.0))) == -3.0


def test_match_spatial_resizes_student_only_when_needed():
    s, t = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 8, 8)
    assert L.match_spatial(s, t).shape == (1, 2, 8, 8)
    assert L.match_spatial(s, s) is s
    assert torch.allclose(L.match_spatial(torch.ones(1, 1, 2, 2), t), torch.ones(1, 1, 8, 8))


def test_kd_loss_fn_mixes_ce_and_kd_against_a_folded_copy_of_the_teacher():
    """The QAT loss: (1 - alpha) CE + alpha T^2 KL, the teacher folded (same logits), frozen, and
    the caller's teacher left as it was (mode, gradients)."""
    import torch.nn.functional as F

    from deploykit.distill import kd_loss_fn
    from deploykit.models import build_model
    from deploykit.recipe import ModelSpec

    torch.manual_seed(0)
    teacher = build_model(ModelSpec(name="resnet20", num_classes=4))
    with torch.no_grad():   # non-trivial BatchNorm statistics, so folding has work to do
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    teacher.train()
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    fn = kd_loss_fn(teacher, alpha=0.7, temperature=3.0)
    out = fn(student, x, y)

    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    teacher.eval()
    with torch.no_grad():
        t = teacher(x)
    s = student(x)
    ce = F.cross_entropy(s, y)
    kd = 9.0 * F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="batchmean")
    torch.testing.assert_close(out["loss"], 0.3 * ce + 0.7 * kd, rtol=1e-4, atol=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
