"""A two-stage detector (Faster R-CNN) through a recipe: its backbone + FPN + proposal head and
its box head are pruned with every output whole, it fine-tunes, exports end to end, and
restores from the prune checkpoint; the Chen terms (SSD-only) are refused before training."""

from __future__ import annotations

import pytest
import torch

from deploykit.cli import main
from deploykit.recipe import load_recipe
from deploykit.report import Report
from deploykit.tasks.detect.models import DetectorNetwork, RoiBoxNetwork, build_detector, roi_cost

NAME = "fasterrcnn_mobilenet_v3_large_320_fpn"


def _recipe(**over) -> dict:
    recipe = {
        "name": "tiny-frcnn",
        "task": "detection",
        "model": {"source": "torchvision", "name": NAME, "num_classes": 5},
        "data": {"kind": "shapes", "image_size": 64, "batch_size": 4, "eval_batch_size": 8,
                 "limit_train": 8, "limit_val": 8, "calib_samples": 8},
        "train": {"epochs": 1, "optimizer": "adamw", "lr": 1e-3, "schedule": "cosine"},
        "stages": [
            {"kind": "prune", "target": {"macs_ratio": 0.5}, "round_to": 8},
            {"kind": "distill", "losses": {},
             "train": {"epochs": 1, "optimizer": "adamw", "lr": 1e-3, "schedule": "cosine"}}],
        "export": {"onnx": {"opset": 18}},
        "bench": {"runtimes": ["onnxruntime-cpu"], "batch_sizes": [1], "iterations": 5,
                  "warmup": 1, "target_rel_ci": None},
    }
    recipe.update(over)
    return recipe


def test_the_box_head_is_counted_over_its_proposals():
    det = build_detector(NAME, 5, 64).eval()
    roi = RoiBoxNetwork(det)
    assert roi.input_shape == (det.backbone.out_channels, 7, 7)
    assert roi.proposals == det.rpn._post_nms_top_n["testing"]
    macs, params = roi_cost(det)
    fc6 = det.roi_heads.box_head.fc6
    assert macs >= fc6.in_features * fc6.out_features * roi.proposals
    assert params == sum(p.numel() for p in det.roi_heads.parameters())
    assert roi_cost(build_detector("ssdlite320_mobilenet_v3_large", 5, 64)) == (0, 0)


@pytest.mark.slow
def test_faster_rcnn_prunes_fine_tunes_exports_and_restores(write_yaml, tmp_path):
    out = tmp_path / "run"
    path = write_yaml(_recipe())
    assert main(["run", str(path), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    base, pruned, tuned = r.candidates
    assert tuned.macs == pruned.macs
    assert pruned.macs / base.macs == pytest.approx(0.5, abs=0.05)   # box head included
    assert pruned.onnx_size_bytes < 0.6 * base.onnx_size_bytes      # box head: most weights
    for c in r.candidates:
        assert c.parity["matched_fraction"] >= 0.95
        assert c.network_latency and c.latency
    metrics = next(s["metrics"] for s in r.stages if s["name"] == "prune")
    assert metrics["roi_macs_ratio"] == pytest.approx(0.5, abs=0.05)
    assert metrics["network_macs_ratio"] == pytest.approx(0.5, abs=0.05)

    # restore: both pruning histories replay on a fresh detector and the weights fit
    from deploykit.tasks.detect.checkpoint import load_detector

    recipe = load_recipe(path)
    model = load_detector(recipe.model, 64, out / "prune.pt").eval()
    fresh = build_detector(NAME, 5, 64).eval()
    net, ref = DetectorNetwork(model), DetectorNetwork(fresh)
    x = torch.rand(1, 3, 64, 64)
    shapes = [o.shape for o in net(x)]
    assert shapes == [o.shape for o in ref(x)]      # RPN maps and FPN features whole
    fpn_in = [b[0].in_channels for b in model.backbone.fpn.layer_blocks]
    assert all(c < 256 for c in fpn_in)            # the FPN's inner width was pruned
    box = model.roi_heads.box_head
    assert box.fc6.out_features < fresh.roi_heads.box_head.fc6.out_features
    assert model.roi_heads.box_predictor.cls_score.out_features == 6
    with torch.no_grad():
        dets = model([torch.rand(3, 64, 80)])
    assert dets[0]["boxes"].shape[1] == 4


def test_chen_terms_on_faster_rcnn_fail_before_training(write_yaml, tmp_path, capsys):
    recipe = _recipe(stages=[{"kind": "prune", "target": {"macs_ratio": 0.5}},
                             {"kind": "distill", "losses": {"det_hint": 1.0}}])
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 2
    assert "Chen terms are implemented for SSD-family detectors" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()
