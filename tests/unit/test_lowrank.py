"""Low-rank factorisation: exactness at full rank, error vs rank, MACs, ONNX parity, errors."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from deploykit import lowrank
from deploykit.errors import RecipeError
from deploykit.models import count_macs_params
from deploykit.models.cifar_resnet import resnet20
from deploykit.recipe import parse_recipe


@pytest.fixture
def conv():
    torch.manual_seed(0)
    return nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=True)


def test_full_rank_factorisations_reproduce_the_layer(conv):
    x = torch.randn(2, 6, 9, 9)
    full = conv(x)
    svd = lowrank.svd_conv(conv, 8)           # rank of the (8, 54) matrix is 8
    tucker = lowrank.tucker2_conv(conv, 6, 8)
    assert [type(m) for m in svd] == [nn.Conv2d, nn.Conv2d]
    assert [m.kernel_size for m in tucker] == [(1, 1), (3, 3), (1, 1)]
    assert tucker[1].stride == (2, 2) and tucker[0].stride == (1, 1)
    torch.testing.assert_close(svd(x), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tucker(x), full, atol=1e-5, rtol=1e-5)
    lin = nn.Linear(12, 5)
    z = torch.randn(3, 12)
    torch.testing.assert_close(lowrank.svd_linear(lin, 5)(z), lin(z), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["svd", "tucker2"])
def test_error_falls_as_rank_grows(conv, method):
    x = torch.randn(4, 6, 9, 9)
    ref = conv(x)
    errors = []
    for r in (1, 2, 4, 6):
        m = lowrank.svd_conv(conv, r) if method == "svd" else lowrank.tucker2_conv(conv, r, r)
        errors.append(float((m(x) - ref).detach().norm() / ref.detach().norm()))
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[0] > 0.3


def test_rank_for_energy_by_hand():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])    # energies 9, 4, 1 of 14
    assert lowrank.rank_for_energy(s, 9 / 14) == 1
    assert lowrank.rank_for_energy(s, 0.9) == 2
    assert lowrank.rank_for_energy(s, 13 / 14) == 2
    assert lowrank.rank_for_energy(s, 1.0) == 3


def test_factorised_macs_match_a_hand_count(conv):
    model = nn.Sequential(conv)
    plans = lowrank.plan_layers(model, (6, 9, 9), "tucker2", rank=3, keep=[])
    (p,) = plans
    # out 5x5; before 8*6*9*25; tucker2: 6*3*81 (1x1 at 9x9) + 3*3*9*25 + 3*8*25
    assert p.macs_before == 8 * 6 * 9 * 25
    assert p.macs_after == 6 * 3 * 81 + 3 * 3 * 9 * 25 + 3 * 8 * 25
    (q,) = lowrank.plan_layers(model, (6, 9, 9), "svd", rank=3, keep=[])
    assert q.macs_after == 3 * 6 * 9 * 25 + 8 * 3 * 25
    lowrank.apply_plans(model, plans)
    counted = count_macs_params(model, (6, 9, 9))[0]
    assert abs(counted - p.macs_after) <= 8 * 25   # the counter may add the bias
    lin = nn.Sequential(nn.Flatten(), nn.Linear(40, 30))
    (r,) = lowrank.plan_layers(lin, (40, 1, 1), "svd", rank=5, keep=[])
    assert (r.macs_before, r.macs_after) == (1200, 5 * 70)


def test_layers_that_would_not_save_macs_are_left_alone_and_reported():
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, groups=4), nn.Linear(4, 4))
    plans = {p.name: p for p in lowrank.plan_layers(
        model, (4, 6, 6), "svd", energy=1.0, keep=[], patterns=["0", "1"])}
    assert plans["0"].status == "no MACs saved at this rank"
    assert plans["0"].macs_after == plans["0"].macs_before
    assert plans["1"].status == "grouped/depthwise conv"
    before = copy.deepcopy(model)
    lowrank.apply_plans(model, list(plans.values()))
    assert str(model) == str(before)


@pytest.mark.parametrize("method", ["svd", "tucker2"])
def test_macs_ratio_target_and_rebuild_and_onnx_parity(method, tmp_path):
    from deploykit.bench import check_parity
    from deploykit.export import export_onnx
    from deploykit.runtimes import OrtRunner, TorchRunner

    torch.manual_seed(0)
    model = resnet20().eval()
    shape = (3, 16, 16)
    base = count_macs_params(model, shape)[0]
    plans = lowrank.plan_layers(model, shape, method, macs_ratio=0.5,
                                first_last=("conv1", "fc"), model_macs=base)
    names = {p.name: p for p in plans}
    assert names["conv1"].status == names["fc"].status == "kept (keep)"
    factorised = lowrank.apply_plans(copy.deepcopy(model), plans).eval()
    macs = count_macs_params(factorised, shape)[0]
    assert 0.45 < macs / base <= 0.5 + 0.01
    # a checkpoint of the factorised model loads into a fresh model rebuilt from the record
    fresh = lowrank.rebuild(resnet20(), [p.to_dict() for p in plans])
    fresh.load_state_dict(factorised.state_dict())
    x = torch.randn(4, *shape)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), factorised(x))
    path = export_onnx(factorised, shape, tmp_path / "lr.onnx")
    res = check_parity(TorchRunner(factorised), OrtRunner(path), [x.numpy()])
    assert res.max_abs_error < 1e-3


def test_invalid_patterns_and_ranks_are_clear_errors(tiny_recipe_dict):
    with pytest.raises(RecipeError, match=r"'layer9\.\*' matches no Conv2d or Linear"):
        lowrank.eligible_layers(resnet20(), ["layer9.*"], [], ("conv1", "fc"))
    for target, match in [({"rank": 2.5}, "an integer"), ({"rank": 0}, "greater than 0"),
                          ({"energy": 0.9, "rank": 3}, "exactly one"),
                          ({"macs_ratio": 1.5}, "less than 1")]:
        raw = {**tiny_recipe_dict, "stages": [{"kind": "lowrank", "target": target}]}
        with pytest.raises(RecipeError, match=match):
            parse_recipe(raw, check_paths=False)
