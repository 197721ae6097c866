from __future__ import annotations

import contextlib

import torch

from deploykit.data import build_loaders
from deploykit.models import build_model
from deploykit.recipe import DataSpec, ModelSpec, TrainSpec
from deploykit.train import evaluate, fit, seed_everything


def _setup():
    seed_everything(0)
    loaders = build_loaders(DataSpec(kind="synthetic", image_size=16, batch_size=32,
                                     synthetic_samples=480), num_classes=3)
    model = build_model(ModelSpec(name="resnet20", num_classes=3))
    return loaders, model


def test_fit_learns_synthetic_data(tmp_path):
    loaders, model = _setup()
    before = evaluate(model, loaders.val)["top1_pct"]
    res = fit(model, loaders.train, loaders.val, TrainSpec(epochs=4, lr=0.05),
              tmp_path / "ck")
    assert res.epochs_run == 4 and len(res.history) == 4
    assert res.final >= 90.0 > before
    assert (tmp_path / "ck" / "last.pt").is_file() and (tmp_path / "ck" / "best.pt").is_file()


def test_resume_continues_and_matches_uninterrupted_run(tmp_path):
    spec = TrainSpec(epochs=3, lr=0.05, schedule="cosine")
    loaders, full = _setup()
    fit(full, loaders.train, loaders.val, spec, tmp_path / "full")

    # interrupt a second, identical run in the middle of its third epoch
    loaders, interrupted = _setup()
    ck_dir = tmp_path / "resume"

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def stop_in_epoch_three(model):
        calls["n"] += 1
        if calls["n"] > 2 * len(loaders.train):
            raise Stop

    with contextlib.suppress(Stop):
        fit(interrupted, loaders.train, loaders.val, spec, ck_dir,
            after_backward=stop_in_epoch_three)
    ck = torch.load(ck_dir / "last.pt", weights_only=True)
    assert ck["epoch"] == 1  # epochs 1 and 2 finished (0-based index 1)

    loaders, resumed = _setup()
    res = fit(resumed, loaders.train, loaders.val, spec, ck_dir, resume=True)
    assert res.epochs_run == 1  # only the third epoch ran
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_models_with_auxiliary_heads_train_on_the_main_logits():
    """googlenet returns GoogLeNetOutputs(logits, aux2, aux1) while training: the loss takes the
    main logits, adds the auxiliary losses only when weighted, and evaluation sees logits."""
    import pytest
    import torch.nn.functional as F

    from deploykit.train import cross_entropy_loss

    torch.manual_seed(0)
    model = build_model(ModelSpec(source="torchvision", name="googlenet", num_classes=3))
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    model.train()
    out = model(x)
    assert type(out).__name__ == "GoogLeNetOutputs"
    main = cross_entropy_loss()(model, x, y)
    assert set(main) == {"loss"}
    weighted = cross_entropy_loss(aux_weight=0.3)(model, x, y)
    assert set(weighted) == {"loss", "ce", "aux"}
    assert float(weighted["aux"]) > 0
    # same weights, same input: the loss is the main CE plus 0.3 of both auxiliary CEs
    model.eval()   # deterministic: compare the formula on eval-mode BN, with the aux heads on
    model.training = True
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout)):
            m.eval()
    torch.manual_seed(1)
    logits, aux2, aux1 = model(x)
    torch.manual_seed(1)
    got = cross_entropy_loss(aux_weight=0.3)(model, x, y)["loss"]
    want = F.cross_entropy(logits, y) + 0.3 * (F.cross_entropy(aux2, y) + F.cross_entropy(aux1, y))
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    assert evaluate(model, [(x, y)])["top1_pct"] >= 0    # eval mode: plain logits


def test_a_forward_without_logits_is_a_model_error():
    import pytest

    from deploykit.errors import ModelError
    from deploykit.models import split_outputs

    with pytest.raises(ModelError, match="wrap the model so it returns the logits"):
        split_outputs({"out": torch.zeros(1)})
