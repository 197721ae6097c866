"""Detection batches, the SSD training pass, the Chen objective and fit() on mAP."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from deploykit.errors import DataError, ModelError
from deploykit.tasks.detect.data import DetectionLoader, build_detection_loaders
from deploykit.tasks.detect.loss import (
    ChenTerms,
    chen_loss,
    detector_loss,
    hint_adapter,
    ssd_pass,
)
from deploykit.tasks.detect.models import build_detector
from deploykit.tasks.detect.shapes import ShapesDetection


def _spec(**kw):
    base = dict(kind="shapes", limit_train=16, limit_val=8, image_size=64, batch_size=4,
                eval_batch_size=8, augment=True, cache=True, calib_samples=4,
                skip_corrupt=False, root=None)
    return SimpleNamespace(**{**base, **kw})


def _batch(n=4, size=64):
    ds = ShapesDetection(n, size=size)
    return [ds[i][0].float() / 255 for i in range(n)], [ds[i][1] for i in range(n)]


def test_augmented_batches_keep_boxes_inside_and_repeat_per_epoch():
    loader = DetectionLoader(ShapesDetection(12, size=64), 4, shuffle=True, augment=True,
                             seed=3)
    first = list(loader)
    assert len(first) == 3 and all(len(ims) == 4 for ims, _ in first)
    for ims, targets in first:
        for im, t in zip(ims, targets, strict=True):
            h, w = im.shape[-2:]
            assert im.dtype == torch.float32 and im.min() >= 0 and im.max() <= 1
            b = t["boxes"]
            assert len(b) == len(t["labels"]) and len(b) >= 1
            assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    again = list(loader)
    assert all(torch.equal(a, b) for (x, _), (y, _) in zip(first, again, strict=True)
               for a, b in zip(x, y, strict=True))
    loader.set_epoch(1)
    other = list(loader)
    assert not all(torch.equal(a, b) for (x, _), (y, _) in zip(first, other, strict=True)
                   for a, b in zip(x, y, strict=True))


def test_loaders_check_the_class_count_and_coco_folders(tmp_path):
    loaders = build_detection_loaders(_spec(), 0, 5)
    assert loaders.num_classes == 5 and len(loaders.calib) == 4
    assert loaders.input_shape == (3, 64, 64)
    with pytest.raises(DataError, match=r"model.num_classes is 3; set model.num_classes: 5"):
        build_detection_loaders(_spec(), 0, 3)
    with pytest.raises(DataError, match=r"train/instances.json not found"):
        build_detection_loaders(_spec(kind="coco", root=tmp_path), 0, 5)


def test_ssd_pass_gives_the_detector_s_own_losses():
    torch.manual_seed(0)
    model = build_detector("ssdlite320_mobilenet_v3_large", 5, 64, width_mult=0.25).train()
    images, targets = _batch()
    own = model(images, targets)
    p = ssd_pass(model, images, targets)
    for k in own:
        assert float(p.losses[k].detach()) == pytest.approx(float(own[k].detach()), rel=1e-5)
    assert p.cls_logits.shape[:2] == p.positive.shape and p.cls_logits.shape[2] == 6
    assert len(p.reg_targets) == int(p.positive.sum()) > 0
    # SSD samples 3 hard negatives per positive (as many as there are)
    per_image = p.sampled.sum(1)
    assert (per_image <= 4 * p.positive.sum(1)).all() and (p.sampled >= p.positive).all()


def test_chen_terms_vanish_or_not_against_an_identical_teacher():
    torch.manual_seed(0)
    student = build_detector("ssdlite320_mobilenet_v3_large", 5, 64, width_mult=0.25).train()
    teacher = copy.deepcopy(student).eval()
    images, targets = _batch()
    adapter = hint_adapter(student, teacher, 64)
    terms = ChenTerms(mu=0.5, bounded_weight=1.0, hint_weight=1.0)
    # BatchNorm in train mode (student) vs eval mode (teacher) would differ: compare in eval
    student.eval()
    for m in student.modules():     # keep BN in eval, the rest training
        m.training = not isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    out = chen_loss(teacher, terms, adapter)(student, images, targets)
    assert float(out["det_bounded_reg"]) == 0.0        # not worse than the teacher: no push
    assert float(out["det_hint"]) == pytest.approx(0.0, abs=1e-8)   # identity adapter
    assert float(out["det_soft_ce"]) > 0               # soft CE is the teacher's entropy
    margin = chen_loss(teacher, ChenTerms(bounded_weight=1.0, margin=0.1))(student, images,
                                                                           targets)
    assert float(margin["det_bounded_reg"]) > 0        # within the margin: pushed
    out["loss"].backward()
    assert adapter.conv.weight.grad is not None


def test_chen_terms_need_an_ssd_teacher_with_the_same_anchors():
    student = build_detector("ssdlite320_mobilenet_v3_large", 5, 64, width_mult=0.25)
    with pytest.raises(ModelError, match="SSD-family"):
        chen_loss(torch.nn.Linear(2, 2), ChenTerms(mu=0.5))
    other = build_detector("ssdlite320_mobilenet_v3_large", 5, 96, width_mult=0.25)
    images, targets = _batch()
    with pytest.raises(ModelError, match="same detector family and input size"):
        chen_loss(other, ChenTerms(mu=0.5))(student.train(), images, targets)
    more = build_detector("ssdlite320_mobilenet_v3_large", 7, 64, width_mult=0.25)
    with pytest.raises(ModelError, match=r"teacher predictions \(4, \d+, 8\) vs student"):
        chen_loss(more, ChenTerms(mu=0.5))(student.train(), images, targets)


@pytest.mark.slow
def test_fit_tracks_map_and_resumes(tmp_path):
    from deploykit.recipe import TrainSpec
    from deploykit.tasks.detect.metric import evaluate_detector
    from deploykit.train import Objective, fit

    loaders = build_detection_loaders(_spec(limit_train=32), 0, 5)
    torch.manual_seed(0)
    model = build_detector("ssdlite320_mobilenet_v3_large", 5, 64, width_mult=0.25)
    spec = TrainSpec(epochs=2, optimizer="adamw", lr=3e-3, schedule="cosine", device="cpu")
    objective = Objective(detector_loss, evaluate_detector, "map50_pct")
    res = fit(model, loaders.train, loaders.val, spec, tmp_path, objective=objective)
    assert res.metric == "map50_pct" and len(res.history) == 2
    assert {"val_map_pct", "val_map50_pct", "train_classification"} <= set(res.history[0])
    assert res.final == pytest.approx(res.history[-1]["val_map50_pct"])
    again = fit(build_detector("ssdlite320_mobilenet_v3_large", 5, 64, width_mult=0.25),
                loaders.train, loaders.val, spec, tmp_path, resume=True, objective=objective)
    assert again.epochs_run == 0 and again.best == res.best
