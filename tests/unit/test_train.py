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
    assert res.final_top1_pct >= 90.0 > before
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
