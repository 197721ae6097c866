"""torchvision detectors built without downloads, at the recipe's size and class count."""

from __future__ import annotations

import pytest
import torch

from deploykit.errors import ModelError
from deploykit.tasks.detect.models import build_detector
from deploykit.tasks.detect.shapes import ShapesDetection


def test_ssdlite_at_a_small_width_and_size_trains_and_detects_the_recipe_classes():
    torch.manual_seed(0)
    model = build_detector("ssdlite320_mobilenet_v3_large", num_classes=5, image_size=64,
                           width_mult=0.25)
    assert model.head.classification_head.module_list[0][1].out_channels % 6 == 0  # 5 + bg
    ds = ShapesDetection(4, size=64)
    images = [ds[i][0].float() / 255 for i in range(4)]
    targets = [ds[i][1] for i in range(4)]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"bbox_regression", "classification"}
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(images[:1])
    boxes, labels = out[0]["boxes"], out[0]["labels"]
    assert boxes.shape[1] == 4 and (boxes >= 0).all() and (boxes <= 64).all()
    assert labels.numel() == 0 or (labels.min() >= 1 and labels.max() <= 5)
    smaller = build_detector("ssdlite320_mobilenet_v3_large", 5, 64, width_mult=0.5)
    wider = build_detector("ssdlite320_mobilenet_v3_large", 5, 64, width_mult=1.0)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) < count(smaller) < count(wider)


def test_unknown_detectors_and_widths_are_clear_errors():
    with pytest.raises(ModelError, match=r"unknown detector .yolo.; choose one of: ssdlite320"):
        build_detector("yolo", 5, 64)
    with pytest.raises(ModelError, match="fcos_resnet50_fpn has no width multiplier"):
        build_detector("fcos_resnet50_fpn", 5, 64, width_mult=0.5)


@pytest.mark.slow
def test_pruning_the_network_halves_its_macs_keeps_the_head_shapes_and_the_detector_trains():
    from deploykit.models import count_macs_params
    from deploykit.prune import prune_to_macs
    from deploykit.recipe import PruneSpec
    from deploykit.tasks.detect.models import DetectorNetwork, prediction_layers, with_network

    torch.manual_seed(0)
    det = build_detector("ssdlite320_mobilenet_v3_large", 5, 64, width_mult=0.5)
    net, shape = DetectorNetwork(det).eval(), (3, 64, 64)
    ignored = prediction_layers(net)
    assert len(ignored) == 12                     # 6 levels x (classes, boxes)
    base = count_macs_params(net, shape)[0]
    pruned, _, _ = prune_to_macs(net, shape, PruneSpec(target={"macs_ratio": 0.5}, round_to=8),
                                 ignored, int(0.5 * base), 0.05 * base)
    assert count_macs_params(pruned, shape)[0] / base == pytest.approx(0.5, abs=0.05)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        before, after = net(x), pruned(x)
    assert [t.shape for t in after] == [t.shape for t in before]    # (2, A, 6), (2, A, 4)
    small = with_network(det, pruned)
    ds = ShapesDetection(2, size=64)
    small.train()
    losses = small([ds[i][0].float() / 255 for i in range(2)], [ds[i][1] for i in range(2)])
    sum(losses.values()).backward()
    small.eval()
    with torch.no_grad():
        assert small([ds[0][0].float() / 255])[0]["boxes"].shape[1] == 4
    # the original detector is untouched
    assert count_macs_params(DetectorNetwork(det), shape)[0] == base


def test_the_recipe_sets_what_every_candidate_keeps_after_decoding():
    from deploykit.recipe import DetectionsSpec, ModelSpec
    from deploykit.tasks.detect.models import detector_from_spec

    spec = ModelSpec(source="torchvision", name="ssdlite320_mobilenet_v3_large", num_classes=5,
                     width_mult=0.25, detections={"score_thresh": 0.2, "detections_per_img": 7})
    torch.manual_seed(0)
    model = detector_from_spec(spec, 64).eval()
    assert (model.score_thresh, model.detections_per_img, model.topk_candidates) == (0.2, 7, 300)
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64) for _ in range(3)])
    assert all(len(o["scores"]) <= 7 and (o["scores"] >= 0.2).all() for o in out)
    frcnn = ModelSpec(source="torchvision", name="fasterrcnn_mobilenet_v3_large_320_fpn",
                      num_classes=5, detections={"score_thresh": 0.3})
    assert detector_from_spec(frcnn, 64).roi_heads.score_thresh == 0.3   # on its ROI heads
    frcnn = frcnn.model_copy(update={"detections": DetectionsSpec(topk_candidates=10)})
    with pytest.raises(ModelError, match=r"model.detections.topk_candidates: FasterRCNN has no"):
        detector_from_spec(frcnn, 64)


@pytest.mark.slow
def test_retinanet_prunes_with_its_head_shapes_kept():
    """torch-pruning's issue 110 reports RetinaNet's dependency graph as broken; traced as
    the backbone + head network with the prediction convs ignored, it prunes."""
    from deploykit.models import count_macs_params
    from deploykit.prune import prune_to_macs
    from deploykit.recipe import PruneSpec
    from deploykit.tasks.detect.models import DetectorNetwork, prediction_layers, with_network

    torch.manual_seed(0)
    det = build_detector("retinanet_resnet50_fpn_v2", 5, 64).eval()
    net, shape = DetectorNetwork(det).eval(), (3, 64, 64)
    base = count_macs_params(net, shape)[0]
    before = [o.shape for o in net(torch.zeros(1, *shape))]
    small, _, _ = prune_to_macs(net, shape, PruneSpec(target={"macs_ratio": 0.5}, round_to=8),
                                prediction_layers(net), int(0.5 * base), 0.03 * base)
    assert count_macs_params(small, shape)[0] / base == pytest.approx(0.5, abs=0.03)
    assert [o.shape for o in small(torch.zeros(1, *shape))] == before
    with torch.no_grad():
        out = with_network(det, small).eval()([torch.rand(3, 64, 80)])
    assert out[0]["boxes"].shape[1] == 4
