"""The distillation objective: taps, adapters, gradients, teacher resolution, function matching."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deploykit.distill import DistillObjective, FeatureTaps, Teacher, default_taps, resolve_taps
from deploykit.errors import RecipeError
from deploykit.models.cifar_resnet import resnet20
from deploykit.recipe import DistillSpec, parse_recipe


def _pruned_student(seed: int = 1) -> nn.Module:
    """A ResNet-20 with half the channels inside each block (as prune leaves it)."""
    import torch_pruning as tp

    torch.manual_seed(seed)
    model = resnet20()
    example = torch.randn(1, 3, 16, 16)
    pruner = tp.pruner.MagnitudePruner(model, example,
                                       importance=tp.importance.MagnitudeImportance(),
                                       pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
    return model


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 16, 16, generator=gen), torch.randint(0, 10, (4,), generator=gen)


ALL_TERMS = {"ce": 0.5, "kd": 0.5, "hint": 1e-2, "attention": 10.0, "overhaul": 1e-3, "fsp": 1e-2}


def test_every_term_trains_student_and_adapters_and_never_the_teacher(batch):
    x, y = batch
    torch.manual_seed(0)
    teacher_model = resnet20()
    before = copy.deepcopy(teacher_model.state_dict())
    student = _pruned_student()
    teacher = Teacher([teacher_model], bn_train=True)
    obj = DistillObjective(student, teacher, DistillSpec(losses=ALL_TERMS), x)
    assert obj.taps == ["layer1.2", "layer2.2", "layer3.2"]
    terms = obj.loss(student, x, y)
    assert set(terms) == {"loss", *ALL_TERMS}
    assert all(torch.isfinite(v) and v >= 0 for v in terms.values())
    terms["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in student.parameters() if p.requires_grad)
    kinds = {k.split("__")[0] for k in obj.adapters}
    assert kinds == {"hint", "overhaul", "fsp"}   # pruned widths differ from the teacher's
    assert all(p.grad is not None for p in obj.adapters.parameters())
    assert all(p.grad is None and not p.requires_grad for m in teacher.models
               for p in m.parameters())
    # the caller's model is untouched: the teacher is a frozen copy, its BN stats kept
    after = teacher_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_overhaul_taps_pre_relu_values_and_margins_from_teacher_bn(batch):
    x, _ = batch
    model = resnet20().eval()
    block = model.layer2[2]
    with FeatureTaps(model, ["layer2.2"], pre_relu=True) as pre, \
            FeatureTaps(model, ["layer2.2"]) as post:
        model(x)
        (p,), (q,) = pre.features(), post.features()
    assert (p < 0).any()                    # before the final ReLU
    assert torch.equal(q, p.clamp(min=0))   # and the block output is its ReLU
    obj = DistillObjective(model, Teacher([model]),
                           DistillSpec(losses={"ce": 1, "kd": 0, "overhaul": 1e-3}), x)
    from deploykit.distill.losses import margin_from_bn
    assert torch.allclose(obj.margin_1, margin_from_bn(block.bn2))


def test_teacher_at_another_resolution_sees_the_same_view_resized(batch):
    _, y = batch
    smooth = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    x = torch.nn.functional.interpolate(smooth, size=(16, 16), mode="bilinear")
    seen = []
    teacher_model = resnet20()
    teacher_model.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    teacher = Teacher([teacher_model], image_size=32)
    student = resnet20()
    obj = DistillObjective(student, teacher,
                           DistillSpec(losses={"kd": 1, "ce": 0, "attention": 10.0},
                                       teacher={"image_size": 32}), x)
    seen.clear()
    terms = obj.loss(student, x, y)
    assert seen[0].shape == (4, 3, 32, 32)
    down = torch.nn.functional.interpolate(seen[0], size=(16, 16), mode="bilinear",
                                           antialias=True)
    assert (down - x).abs().mean() < 0.1 * x.abs().mean()   # the same images, resized
    assert torch.isfinite(terms["attention"])                # 8x8 vs 4x4 maps were matched


def test_function_matching_feeds_one_mixed_batch_to_both(batch):
    x, y = batch
    got = {}
    student, teacher_model = resnet20(), resnet20()
    student.register_forward_pre_hook(lambda _m, a: got.__setitem__("s", a[0]))
    spec = DistillSpec(mode="function_matching")
    assert (spec.losses.ce, spec.losses.kd, spec.temperature) == (0.0, 1.0, 1.0)
    assert (spec.train.optimizer, spec.train.schedule, spec.train.grad_clip) == \
        ("adamw", "cosine", 1.0)
    obj = DistillObjective(student, Teacher([teacher_model]), spec, x)
    # the teacher it runs is the logit-only (BN-folded) copy: hook that one
    obj.teacher.main.register_forward_pre_hook(lambda _m, a: got.__setitem__("t", a[0]))
    terms = obj.loss(student, x, y)
    assert set(terms) == {"loss", "kd"}
    assert torch.equal(got["s"], got["t"])
    assert not torch.allclose(got["s"], x)          # mixup changed the input
    first = got["t"].clone()
    obj.loss(student, x, y)
    assert torch.equal(got["s"], got["t"])
    assert not torch.equal(first, got["t"])   # a new mix, and the teacher ran on it again


def test_default_taps_for_known_architectures():
    import torchvision

    assert default_taps(resnet20()) == ["layer1.2", "layer2.2", "layer3.2"]
    assert default_taps(torchvision.models.resnet18()) == \
        ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    ends = default_taps(torchvision.models.mobilenet_v2())   # the block before each stride
    assert ends == ["features.1", "features.3", "features.6", "features.13", "features.18"]
    with pytest.raises(RecipeError, match="name them"):
        default_taps(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))


def test_unknown_tap_is_a_clear_error():
    with pytest.raises(RecipeError, match=r"no module named 'layer9.2'.*layer1"):
        resolve_taps(resnet20(), ["layer9.2"])
    assert resolve_taps(resnet20(), ["layer3.*.bn2"]) == \
        ["layer3.0.bn2", "layer3.1.bn2", "layer3.2.bn2"]
    with pytest.raises(RecipeError, match="4-D"):
        DistillObjective(resnet20(), Teacher([resnet20()]),
                         DistillSpec(losses={"attention": 1.0}, taps=["fc"]),
                         torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize(("stage", "match"), [
    ({"kind": "distill", "mode": "function_matching", "losses": {"ce": 0.5, "kd": 1}},
     "KL term alone"),
    ({"kind": "distill", "losses": {"ce": 0, "kd": 0}}, "at least one"),
    ({"kind": "distill", "losses": {"kd": 1, "hint": 1}, "teacher": {"checkpoints": ["a", "b"]}},
     "single teacher"),
    ({"kind": "distill", "loss": {"kd": 1}}, "unknown key"),
])
def test_distill_recipe_errors(stage, match, tiny_recipe_dict):
    raw = {**tiny_recipe_dict, "stages": [{"kind": "prune", "target": {"ratio": 0.5}}, stage]}
    with pytest.raises(RecipeError, match=match):
        parse_recipe(raw, check_paths=False)


def test_missing_teacher_checkpoint_is_named(tiny_recipe_dict, tmp_path):
    raw = {**tiny_recipe_dict, "stages": [
        {"kind": "prune", "target": {"ratio": 0.5}},
        {"kind": "distill", "teacher": {"checkpoints": [str(tmp_path / "t.pt")]}}]}
    with pytest.raises(RecipeError, match=r"stages\[1\].teacher.checkpoints\[0\]"):
        parse_recipe(raw)


def test_distill_must_follow_a_compression_stage(tiny_recipe_dict):
    with pytest.raises(RecipeError, match="must come after"):
        parse_recipe({**tiny_recipe_dict, "stages": [{"kind": "distill"}]}, check_paths=False)


def test_logit_only_teacher_is_folded_and_gives_the_same_logits(batch):
    """KD without feature terms folds the teacher's BatchNorm and runs it channels_last: the
    logits stay those of the plain frozen model, and no gradient reaches the teacher."""
    x, y = batch
    torch.manual_seed(0)
    model = resnet20()
    with torch.no_grad():   # non-trivial BN statistics, so folding has something to do
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    reference = Teacher([model])(x)[0]
    teacher = Teacher([model])
    obj = DistillObjective(_pruned_student(), teacher, DistillSpec(losses={"ce": 0.1, "kd": 0.9}),
                           x)
    assert teacher.logits_only and obj.notes == []
    assert not any(isinstance(m, nn.BatchNorm2d) for m in teacher.main.modules())
    assert torch.allclose(teacher(x)[0], reference, atol=1e-4)
    obj.loss(obj_student := _pruned_student(), x, y)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.main.parameters())
    assert any(p.grad is not None for p in obj_student.parameters())


def test_feature_losses_keep_the_unfused_teacher(batch):
    x, _ = batch
    teacher = Teacher([resnet20()])
    DistillObjective(_pruned_student(), teacher, DistillSpec(losses={"kd": 1.0, "attention": 1.0}),
                     x)
    assert not teacher.logits_only
    assert any(isinstance(m, nn.BatchNorm2d) for m in teacher.main.modules())
