from __future__ import annotations

import pytest
import torch

from deploykit.errors import CheckpointError, ModelError
from deploykit.models import (
    build_model,
    count_macs_params,
    find_first_last,
    load_checkpoint,
    load_weights,
    make_checkpoint,
    parse_model_ref,
)
from deploykit.recipe import ModelSpec


@pytest.mark.parametrize(("name", "params_m", "macs_m"), [
    ("resnet20", 0.272, 41.4), ("resnet32", 0.467, 70.1), ("resnet56", 0.856, 127.3)])
def test_builtin_cifar_resnets_match_the_paper_sizes(name, params_m, macs_m):
    model = build_model(ModelSpec(name=name))
    macs, params = count_macs_params(model, (3, 32, 32))
    assert params / 1e6 == pytest.approx(params_m, rel=0.02)
    assert macs / 1e6 == pytest.approx(macs_m, rel=0.02)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert find_first_last(model, (3, 32, 32)) == ("conv1", "fc")


@pytest.mark.parametrize(("name", "first", "last", "size"), [
    ("resnet18", "conv1", "fc", 32),
    ("mobilenet_v2", "features.0.0", "classifier.1", 32),
    ("efficientnet_b0", "features.0.0", "classifier.1", 32),
    ("mobilenet_v3_small", "features.0.0", "classifier.3", 32),
    ("vit_b_16", "conv_proj", "heads.head", 224),
])
def test_torchvision_models_build_and_first_last_found(name, first, last, size):
    model = build_model(ModelSpec(source="torchvision", name=name, num_classes=7))
    assert find_first_last(model, (3, size, size)) == (first, last)
    if size == 32:
        model.eval()
        assert model(torch.randn(1, 3, size, size)).shape == (1, 7)


def test_cifar_mobilenet_v2_keeps_4x4_maps_at_32px():
    """The CIFAR MobileNetV2 downsamples 8x (stride-1 stem and second stage), not 32x."""
    model = build_model(ModelSpec(name="mobilenet_v2_cifar")).eval()
    feats = model.features(torch.randn(1, 3, 32, 32))
    assert feats.shape == (1, 1280, 4, 4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert find_first_last(model, (3, 32, 32)) == ("features.0.0", "classifier.1")
    macs, _ = count_macs_params(model, (3, 32, 32))
    assert 85e6 < macs < 100e6   # about 94 M, the usual CIFAR MobileNetV2 size


def test_unknown_models_are_clear_errors():
    with pytest.raises(ModelError, match="unknown builtin model 'resnet21'"):
        build_model(ModelSpec(name="resnet21"))
    with pytest.raises(ModelError, match="not a torchvision classification model"):
        build_model(ModelSpec(source="torchvision", name="fasterrcnn"))
    with pytest.raises(ModelError, match="cannot import"):
        build_model(ModelSpec(source="factory", name="no_such_pkg.mod:fn"))
    with pytest.raises(ModelError, match=r"package\.module:function"):
        build_model(ModelSpec(source="factory", name="justaname"))


def test_factory_models_are_called_with_num_classes():
    spec = parse_model_ref("deploykit.models.cifar_resnet:resnet20", num_classes=3)
    assert spec.source == "factory"
    assert build_model(spec).fc.out_features == 3
    assert parse_model_ref("torchvision:resnet18").source == "torchvision"
    assert parse_model_ref("resnet56").source == "builtin"


def test_checkpoint_roundtrip_weights_only(tmp_path):
    a = build_model(ModelSpec(name="resnet20"))
    path = tmp_path / "a.pt"
    torch.save(make_checkpoint(a, arch={"widths": [1, 2]}), path)
    ck = load_checkpoint(path)
    assert ck["arch"] == {"widths": [1, 2]}
    b = load_weights(build_model(ModelSpec(name="resnet20")), ck["state_dict"], str(path), 10)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a.eval()(x), b.eval()(x))
    # a plain state_dict works too
    torch.save(a.state_dict(), tmp_path / "plain.pt")
    assert set(load_checkpoint(tmp_path / "plain.pt")["state_dict"]) == set(a.state_dict())


def test_corrupt_and_pickled_checkpoints_are_rejected(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(bad)
    pickled = tmp_path / "model.pt"
    torch.save(build_model(ModelSpec(name="resnet20")), pickled)  # a whole pickled module
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(pickled)


def test_class_count_mismatch_is_named(tmp_path):
    ten = build_model(ModelSpec(name="resnet20", num_classes=10))
    four = build_model(ModelSpec(name="resnet20", num_classes=4))
    with pytest.raises(CheckpointError, match=r"has 10 classes but model.num_classes is 4"):
        load_weights(four, ten.state_dict(), "ck.pt", 4, "fc")
    r32 = build_model(ModelSpec(name="resnet32")).state_dict()
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_weights(ten, r32, "ck.pt", 10, "fc")


def test_a_forward_that_fails_at_the_input_size_is_a_model_error_before_training():
    """inception_v3 at 75x75 runs in eval mode but its auxiliary head fails in training."""
    import pytest
    import torch
    from torch import nn

    from deploykit.errors import ModelError
    from deploykit.models import check_forward, find_first_last

    class AuxNeedsRoom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if self.training and x.shape[-1] < 40:
                raise RuntimeError("Output size is too small")
            return self.fc(self.conv(x).mean((2, 3)))

    model = AuxNeedsRoom()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelError, match=r"train-mode forward fails on 32x32 images .*"
                                         r"raise data.image_size"):
        check_forward(model, (3, 32, 32))
    check_forward(model, (3, 48, 48))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ModelError, match=r"forward fails on \(3, 2, 2\) inputs"):
        find_first_last(model, (3, 2, 2))
