from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from deploykit.bench import check_parity
from deploykit.errors import RecipeError
from deploykit.export import export_onnx
from deploykit.models import (
    build_model,
    count_macs_params,
    find_first_last,
    make_checkpoint,
)
from deploykit.prune import prune_to_macs, replay_pruning
from deploykit.recipe import ModelSpec, PruneSpec, parse_recipe
from deploykit.runtimes import OrtRunner, TorchRunner
from deploykit.stages.prune import check
from deploykit.tasks.restore import restore_checkpoint

pytestmark = pytest.mark.slow


def _model(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    if name == "resnet20":
        return build_model(ModelSpec(name=name)).eval(), (3, 32, 32)
    if name == "vit_b_16":  # torchvision's ViT takes any multiple of the patch size
        return torchvision.models.vit_b_16(image_size=32, num_classes=10).eval(), (3, 32, 32)
    return build_model(ModelSpec(source="torchvision", name=name, num_classes=10)).eval(), \
        (3, 32, 32)


# regnet's grouped convolutions move in steps of the group width: with round_to 8 the nearest
# reachable point is 0.44x, so it is pruned here without rounding (the stage warns otherwise)
ZOO = [("resnet20", 8), ("resnet18", 8), ("mobilenet_v2", 8), ("mobilenet_v3_small", 8),
       ("efficientnet_b0", 8), ("regnet_x_400mf", None), ("convnext_tiny", 8),
       ("vit_b_16", 8)]


@pytest.mark.parametrize(("name", "round_to"), ZOO)
def test_macs_ratio_half_lands_within_2pct_and_exports(name, round_to, tmp_path):
    model, shape = _model(name)
    spec = PruneSpec(target={"macs_ratio": 0.5}, round_to=round_to)
    _, last = find_first_last(model, shape)
    base_macs = count_macs_params(model, shape)[0]
    out_features = model.get_submodule(last).out_features
    pruned, history, _ = prune_to_macs(model, shape, spec, [last], base_macs // 2,
                                       0.02 * base_macs)
    ratio = count_macs_params(pruned, shape)[0] / base_macs
    assert abs(ratio - 0.5) <= 0.02, ratio
    assert pruned.get_submodule(last).out_features == out_features  # classifier kept whole
    assert history
    path = export_onnx(pruned, shape, tmp_path / f"{name}.onnx")
    x = [np.random.default_rng(0).standard_normal((3, *shape), dtype=np.float32)]
    check_parity(TorchRunner(pruned), OrtRunner(path), x, max_abs_error=1e-3)
    assert path.stat().st_size < 0.8 * export_onnx(model, shape, tmp_path / "b.onnx").stat().st_size


def test_round_to_keeps_widths_multiples_of_8():
    model, shape = _model("resnet18")
    base = count_macs_params(model, shape)[0]
    pruned, _, _ = prune_to_macs(model, shape, PruneSpec(target={"macs_ratio": 0.5}), ["fc"],
                                 base // 2, 0.02 * base)
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d) and m.out_channels != 3]
    assert all(c.out_channels % 8 == 0 for c in convs)


def test_save_load_roundtrip_is_exact_with_weights_only(tmp_path):
    model, shape = _model("resnet20")
    base = count_macs_params(model, shape)[0]
    pruned, hist, _ = prune_to_macs(model, shape, PruneSpec(target={"macs_ratio": 0.5}), ["fc"],
                                    base // 2, 0.02 * base)
    path = tmp_path / "pruned.pt"
    torch.save(make_checkpoint(pruned, {"pruning_history": [hist]}), path)
    fresh = build_model(ModelSpec(name="resnet20"))
    restore_checkpoint(fresh, path, 10, ("conv1", "fc"), shape)
    x = torch.randn(4, *shape)
    assert torch.equal(fresh.eval()(x), pruned.eval()(x))
    # loading the pruned weights into an unpruned model is a clear error, not a crash
    torch.save(make_checkpoint(pruned), tmp_path / "no_history.pt")
    with pytest.raises(Exception, match="shape mismatch"):
        restore_checkpoint(build_model(ModelSpec(name="resnet20")), tmp_path / "no_history.pt",
                           10, ("conv1", "fc"), shape)


def test_two_round_history_replays(tmp_path):
    model, shape = _model("resnet20")
    base = count_macs_params(model, shape)[0]
    spec = PruneSpec(target={"macs_ratio": 0.5})
    r1, h1, _ = prune_to_macs(model, shape, spec, ["fc"], int(base * 0.7), 0.02 * base)
    r2, h2, _ = prune_to_macs(r1, shape, spec, ["fc"], int(base * 0.5), 0.02 * base)
    fresh = replay_pruning(build_model(ModelSpec(name="resnet20")), [h1, h2], shape)
    fresh.load_state_dict(r2.state_dict())
    x = torch.randn(2, *shape)
    assert torch.equal(fresh.eval()(x), r2.eval()(x))


@pytest.mark.parametrize("importance", ["l2", "bn_scale", "taylor", "group_norm", "random"])
def test_every_importance_criterion_prunes(importance):
    from deploykit.prune import prune_model

    model, shape = _model("resnet20")
    spec = PruneSpec(importance=importance, target={"ratio": 0.5})
    grads = [(torch.randn(8, *shape), torch.randint(0, 10, (8,)))]
    before = count_macs_params(model, shape)[0]
    prune_model(model, torch.zeros(1, *shape), spec, ["fc"], 0.5, grads)
    assert count_macs_params(model, shape)[0] < 0.75 * before
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_random_and_l1_choose_different_channels():
    from deploykit.prune import prune_model

    a, shape = _model("resnet20")
    b = copy.deepcopy(a)
    ha = prune_model(a, torch.zeros(1, *shape), PruneSpec(target={"ratio": 0.5}), ["fc"], 0.5)
    hb = prune_model(b, torch.zeros(1, *shape),
                     PruneSpec(importance="random", target={"ratio": 0.5}), ["fc"], 0.5)
    assert ha != hb


@pytest.mark.parametrize(("target", "message"), [
    ({"ratio": 0.0}, "greater than 0"), ({"ratio": 1.0}, "less than 1"),
    ({"macs_ratio": 1.5}, "less than 1"), ({}, "exactly one of"),
    ({"ratio": 0.5, "macs_ratio": 0.5}, "exactly one of")])
def test_bad_targets_are_clear_errors(target, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe({"stages": [{"kind": "prune", "target": target}]}, check_paths=False)


def test_unknown_importance_and_sparsity_mismatch():
    with pytest.raises(RecipeError, match=r"stages\[0\]\.importance: .*'l1'"):
        parse_recipe({"stages": [{"kind": "prune", "importance": "l3",
                                  "target": {"ratio": 0.5}}]}, check_paths=False)
    with pytest.raises(RecipeError, match="has no regulariser"):
        parse_recipe({"stages": [{"kind": "prune", "importance": "l1", "target": {"ratio": 0.5},
                                  "sparsity": {"epochs": 1}}]}, check_paths=False)


def test_ignored_pattern_that_matches_nothing_is_an_error():
    model, _ = _model("resnet20")
    check(model, PruneSpec(target={"ratio": 0.5}, ignored=["layer1.*"]), ("conv1", "fc"))
    with pytest.raises(RecipeError, match=r"pattern 'layer9\.\*' matches no module"):
        check(model, PruneSpec(target={"ratio": 0.5}, ignored=["layer9.*"]), ("conv1", "fc"))


_SHUFFLED = """
import torch
from torch import nn


class Shuffled(nn.Module):
    # every conv's channels go through a channel shuffle (view -> transpose -> reshape)
    def __init__(self, num_classes):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    @staticmethod
    def shuffle(x):
        n, c, h, w = x.shape
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)

    def forward(self, x):
        return self.fc(self.shuffle(self.b(self.shuffle(self.a(x)))).mean((2, 3)))
"""


def test_a_model_that_cannot_be_pruned_stops_before_training(tiny_recipe_dict, write_yaml,
                                                            tmp_path, capsys, monkeypatch):
    """Every layer feeds a channel shuffle, which torch-pruning would map as if it kept the
    channel order (silently wrong): a ModelError naming the model, the cause and the fix,
    exit 2, nothing trained."""
    from deploykit.cli import main

    (tmp_path / "shuffled_net.py").write_text(_SHUFFLED, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = {**tiny_recipe_dict,
              "model": {"source": "factory", "name": "shuffled_net:Shuffled", "num_classes": 4},
              "stages": [{"kind": "prune", "target": {"macs_ratio": 0.5}}]}
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "torch-pruning cannot trace Shuffled" in err and "channel shuffle" in err
    assert "leave the prune stage out" in err and "Traceback" not in err
    assert not (out / "checkpoints").exists() and not (out / "baseline.pt").exists()


def test_shufflenet_prunes_around_its_channel_shuffles_and_replays(tmp_path):
    """torch-pruning divides by zero on ShuffleNet's channel shuffle; the layers whose channels
    pass through it are left whole (and said so), the inner ones are pruned to the target,
    and the pruning history replays onto a fresh model."""
    from deploykit.prune import layers_to_leave_whole

    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    shape = (3, 32, 32)
    whole = layers_to_leave_whole(model, torch.zeros(1, *shape))
    assert "stage2.0.branch2.5" in whole and "stage2.0.branch2.0" not in whole
    assert all("channel-mixing reshape" in why for why in whole.values())
    spec = PruneSpec(target={"macs_ratio": 0.5}, round_to=8)
    base = count_macs_params(model, shape)[0]
    before = {n: m.weight.shape[0] for n, m in model.named_modules() if n in whole}
    pruned, hist, _ = prune_to_macs(model, shape, spec, ["fc", *whole], int(0.5 * base),
                                    0.02 * base)
    assert abs(count_macs_params(pruned, shape)[0] / base - 0.5) <= 0.02
    # their output channels (the ones that reach the shuffle) stay; inputs may shrink
    assert {n: m.weight.shape[0] for n, m in pruned.named_modules() if n in whole} == before
    assert pruned.get_submodule("stage2.1.branch2.0").out_channels < 24
    fresh = replay_pruning(torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval(),
                           [hist], shape)
    fresh.load_state_dict(pruned.state_dict())
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.allclose(fresh(x), pruned(x), atol=1e-5)


def test_a_dependency_graph_that_does_not_close_is_refused(monkeypatch):
    """swin_t with its attention left unsealed: torch-pruning's shape inference hits its
    recursion limit, and grouping that graph then grows past 7 GiB; the warnings are caught
    before any grouping."""
    import torchvision

    from deploykit.errors import ModelError
    from deploykit.prune import check_traceable

    monkeypatch.setattr("deploykit.prune.opaque.sealed_blocks", lambda model, example: {})
    model = torchvision.models.get_model("swin_t", weights=None, num_classes=10).eval()
    spec = PruneSpec(target={"macs_ratio": 0.5})
    with pytest.raises(ModelError, match=r"SwinTransformer: its dependency graph does not close"
                                         r" \(shape inference hit torch-pruning's recursion "
                                         r"limit \d+ times\)"):
        check_traceable(model, torch.zeros(1, 3, 224, 224), spec, ["head"])
    r20, shape = _model("resnet20")
    check_traceable(r20, torch.zeros(1, *shape), spec, ["fc"])   # a traceable model passes


def test_a_missed_macs_target_says_why_and_what_to_change():
    from deploykit.prune import explain_macs_miss

    spec = PruneSpec(target={"macs_ratio": 0.8}, round_to=16)
    # R20 with round_to 16: every ratio floors each layer by a multiple of 16 -> 0.62x at best
    model, shape = _model("resnet20")
    base = count_macs_params(model, shape)[0]
    _, _, probes = prune_to_macs(model, shape, spec, ["fc"], int(0.8 * base), 0.02 * base)
    why = explain_macs_miss(probes, base, spec, ["fc"])
    assert "smallest ratio tried already removes too much" in why and "round_to 16" in why
    assert "global: true" in why
    # a ceiling: even the largest ratio keeps too much
    low = PruneSpec(target={"macs_ratio": 0.1}, max_layer_ratio=0.3)
    why = explain_macs_miss([{"pruning_ratio": 0.3, "macs": 60}], 100, low, ["fc"])
    assert "raise max_layer_ratio or ignore fewer layers" in why and "0.600x" in why
    # coarse steps on both sides
    mid = PruneSpec(target={"macs_ratio": 0.5})
    why = explain_macs_miss([{"pruning_ratio": 0.3, "macs": 60}, {"pruning_ratio": 0.4,
                                                                  "macs": 44}], 100, mid, ["fc"])
    assert "0.440x and 0.600x" in why and "widen target.tolerance" in why
