"""A detector exported end to end (decode + NMS in the graph) gives ONNX Runtime the same
detections as PyTorch, compared as matched sets."""

from __future__ import annotations

import pytest
import torch

from deploykit.export import ExportError
from deploykit.tasks.detect.export import DETECTION_INPUT, DETECTION_OUTPUTS, export_detector
from deploykit.tasks.detect.models import build_detector
from deploykit.tasks.detect.parity import match_detections
from deploykit.tasks.detect.shapes import ShapesDetection


def _dets(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32),
            "scores": torch.tensor(scores), "labels": torch.tensor(labels)}


def test_matching_ignores_order_and_finds_moved_and_relabelled_boxes():
    ref = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 15, 15]], [0.9, 0.8, 0.8], [1, 2, 1])
    same = _dets([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 40, 40]], [0.8, 0.9, 0.8], [1, 1, 2])
    p = match_detections(ref, same)
    assert p.matched_fraction == 1.0 and p.min_iou == pytest.approx(1.0) and p.ok()
    moved = _dets([[0, 0, 10, 10], [22, 22, 42, 42], [5, 5, 15, 15]], [0.9, 0.8, 0.7], [1, 2, 3])
    p = match_detections(ref, moved)
    assert p.matched_fraction == pytest.approx(2 / 3)      # the relabelled one is unmatched
    assert p.min_iou == pytest.approx(324 / 476) and not p.ok()
    assert match_detections(ref, _dets([], [], []) | {
        "boxes": torch.zeros(0, 4)}).matched_fraction == 0.0
    # cut at top-3: the tie at 0.8 may keep another box; only detections above the cut count
    tied = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0.9, 0.8, 0.8], [1, 2, 1])
    assert match_detections(ref, tied).matched_fraction == pytest.approx(2 / 3)
    p = match_detections(ref, tied, top_k=3)
    assert p.matched_fraction == 1.0 and p.count_ref == 1
    # INT8: only the reference's detections above min_score are matched, against the other
    # run's above half of it (a box at the threshold may score just below it there)
    low = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [70, 70, 80, 80]], [0.9, 0.06, 0.01], [1, 2, 1])
    assert match_detections(low, ref).matched_fraction == pytest.approx(2 / 3)
    p = match_detections(low, ref, min_score=0.05)
    assert p.matched_fraction == 1.0 and (p.count_ref, p.count_other) == (2, 3)
    at_threshold = _dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.04], [1, 2])
    assert match_detections(low, at_threshold, min_score=0.05).matched_fraction == 1.0
    assert match_detections(low, at_threshold, min_score=0.1).count_ref == 1


@pytest.mark.slow
def test_end_to_end_export_matches_pytorch_in_onnx_runtime(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_detector("ssdlite320_mobilenet_v3_large", 5, 64, width_mult=0.25)
    data = ShapesDetection(8, size=64)
    images = [data[i][0].float() / 255 for i in range(8)]
    model.train()
    with torch.no_grad():   # BatchNorm statistics from data, as after training
        model.backbone(torch.stack(images))
    model.eval()
    path = export_detector(model, images, tmp_path / "det.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [DETECTION_INPUT]
    assert [o.name for o in sess.get_outputs()] == list(DETECTION_OUTPUTS)
    for x in images[:4]:
        boxes, scores, labels = sess.run(None, {DETECTION_INPUT: x[None].numpy()})
        with torch.no_grad():
            ref = model([x])[0]
        assert len(scores) > 0
        p = match_detections(ref, {"boxes": torch.from_numpy(boxes),
                                   "scores": torch.from_numpy(scores),
                                   "labels": torch.from_numpy(labels)}, iou=0.99,
                             top_k=model.detections_per_img)
        assert p.ok(), p
    # a model with no detection while traced could lose its NMS: refused
    model.score_thresh = 1.1
    with pytest.raises(ExportError, match="no detection above its score threshold"):
        export_detector(model, images[:2], tmp_path / "none.onnx")
    assert not (tmp_path / "none.onnx").exists()
