from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deploykit.data import TensorLoader, build_loaders
from deploykit.errors import DataError
from deploykit.recipe import DataSpec


def test_digits_split_is_deterministic_and_normalised():
    a = build_loaders(DataSpec(kind="digits", batch_size=64))
    b = build_loaders(DataSpec(kind="digits", batch_size=64))
    assert a.num_classes == 10 and a.input_shape == (3, 32, 32)
    assert a.train.num_samples + a.val.num_samples == 1797
    assert torch.equal(a.val.labels, b.val.labels)
    x, _ = next(iter(a.val))
    assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 0.5  # roughly centred by the data's own statistics
    assert len(a.calib.labels) == 512


def test_synthetic_uses_model_class_count():
    loaders = build_loaders(DataSpec(kind="synthetic", image_size=16, synthetic_samples=100),
                            num_classes=4)
    assert loaders.num_classes == 4
    assert int(loaders.train.labels.max()) < 4


def test_digits_class_count_mismatch_is_clear():
    with pytest.raises(DataError, match=r"has 10 classes but model\.num_classes is 100"):
        build_loaders(DataSpec(kind="digits"), num_classes=100)


def test_tensor_loader_augmentation_is_seeded_per_epoch():
    imgs = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    loader = TensorLoader(imgs, torch.arange(10), 4, (0.5,) * 3, (0.25,) * 3, shuffle=True,
                          pad=2, flip=True, drop_last=True, seed=3)
    assert len(loader) == 2
    first = [x.clone() for x, _ in loader]
    again = [x.clone() for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    loader.set_epoch(1)
    other = [x for x, _ in loader]
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert first[0].shape == (4, 3, 8, 8)


def test_random_crop_is_a_shifted_window():
    img = torch.arange(3 * 4 * 4, dtype=torch.uint8).view(1, 3, 4, 4)
    loader = TensorLoader(img, torch.zeros(1, dtype=torch.long), 1, (0, 0, 0), (1 / 255,) * 3,
                          pad=1, seed=0)
    for epoch in range(5):
        loader.set_epoch(epoch)
        x, _ = next(iter(loader))
        padded = torch.nn.functional.pad(img.float(), (1, 1, 1, 1))
        windows = [padded[..., i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
        assert any(torch.equal(x, w) for w in windows)


def _make_folder(root, classes, per_class=3, splits=("train", "val"), size=12):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")


def test_imagefolder_cached(tmp_path):
    _make_folder(tmp_path, ["cat", "dog"])
    loaders = build_loaders(DataSpec(kind="imagefolder", root=tmp_path, image_size=8,
                                     batch_size=2), num_classes=2)
    assert loaders.class_names == ["cat", "dog"]
    assert loaders.train.num_samples == 6 and loaders.val.num_samples == 6
    x, _ = next(iter(loaders.val))
    assert x.shape == (6, 3, 8, 8)


def test_imagefolder_streaming(tmp_path):
    _make_folder(tmp_path, ["a", "b", "c"], splits=("train", "test"))
    loaders = build_loaders(DataSpec(kind="imagefolder", root=tmp_path, image_size=8,
                                     batch_size=2, cache=False, num_workers=0), num_classes=3)
    x, y = next(iter(loaders.train))
    assert x.shape == (2, 3, 8, 8) and y.shape == (2,)


def test_imagefolder_errors(tmp_path):
    _make_folder(tmp_path, ["a", "b"], splits=("train",))
    with pytest.raises(DataError, match="no val/ or test/ folder"):
        build_loaders(DataSpec(kind="imagefolder", root=tmp_path))
    _make_folder(tmp_path, ["a", "b"], splits=("val",))
    with pytest.raises(DataError, match=r"has 2 classes but model\.num_classes is 10"):
        build_loaders(DataSpec(kind="imagefolder", root=tmp_path), num_classes=10)


@pytest.mark.parametrize("cache", [True, False])
def test_a_corrupt_image_is_named_or_skipped_and_counted(tmp_path, capsys, cache):
    _make_folder(tmp_path, ["a", "b"])
    bad = tmp_path / "train" / "b" / "9.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")   # a JPEG header, then nothing
    spec = DataSpec(kind="imagefolder", root=tmp_path, image_size=8, batch_size=2, cache=cache,
                    num_workers=0)
    with pytest.raises(DataError, match=r"1 of 13 images cannot be decoded \(first: .*9\.jpg.*"
                                        r"data\.skip_corrupt: true"):
        build_loaders(spec, num_classes=2)
    loaders = build_loaders(spec.model_copy(update={"skip_corrupt": True}), num_classes=2)
    assert "skipping 1 of 13 images" in " ".join(capsys.readouterr().err.split())
    n = loaders.train.num_samples if cache else len(loaders.train.dataset)
    assert n == 6   # the six good ones
    for x, _ in loaders.train:   # and no batch trips on the bad file
        assert torch.isfinite(x).all()


def test_an_empty_class_folder_is_refused(tmp_path):
    _make_folder(tmp_path, ["a", "b"])
    (tmp_path / "train" / "c").mkdir()
    (tmp_path / "val" / "c").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/c holds no images"):
        build_loaders(DataSpec(kind="imagefolder", root=tmp_path), num_classes=3)
