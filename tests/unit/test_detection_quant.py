"""INT8 detectors: the network quantized inside a float resize / decoding / NMS, exported in
parts joined into one ONNX graph whose detections match the fake-quant model's."""

from __future__ import annotations

import onnx
import pytest
import torch

from deploykit.errors import ModelError
from deploykit.quant import SCHEMES, prepare, sqnr_db
from deploykit.tasks.detect.models import DetectorNetwork, build_detector
from deploykit.tasks.detect.network_quant import (
    counting_network,
    detector_keep_float,
    head_keys,
    heads_only,
    network_batches,
    quantized_detector,
    quantized_network,
    runtime_network,
)
from deploykit.tasks.detect.parity import match_detections

SIZE = 64


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    det = build_detector("ssdlite320_mobilenet_v3_large", 5, SIZE, width_mult=0.25)
    det.train()
    with torch.no_grad():   # BatchNorm statistics of real-looking inputs: random weights
        for _ in range(4):  # then give scores that spread, and detections
            DetectorNetwork(det)(torch.rand(8, 3, SIZE, SIZE) * 4 - 2)
    return det.eval()


def _images(n: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, SIZE + 8 * i, SIZE + 4 * i, generator=g) for i in range(n)]


def _int8(detector, keep_patterns=("first", "last")):
    network = DetectorNetwork(detector, with_features=True).eval()
    keep = detector_keep_float(network, keep_patterns)
    qm = prepare(network, SCHEMES["onnxruntime-cpu"], keep)
    qm.calibrate(network_batches(detector, _images(8)))
    return quantized_detector(detector, qm, head_keys(detector, SIZE)), qm, keep


def test_first_and_last_mean_the_stem_and_every_prediction_conv(detector):
    network = DetectorNetwork(detector, with_features=True)
    keep = detector_keep_float(network, ["first", "last"])
    assert keep[0] == "backbone.features.0.0.0"
    assert len(keep) == 1 + 12     # 6 feature levels x (classification, regression)
    assert all(".module_list." in n for n in keep[1:])
    assert detector_keep_float(network, ["head.regression_head.*"])[0].startswith(
        "head.regression_head")
    with pytest.raises(ModelError, match=r"'neck\.\*' matches no conv/linear layer"):
        detector_keep_float(network, ["neck.*"])


def test_the_int8_detector_runs_the_fake_quant_network_inside_the_float_detector(detector):
    qdet, qm, keep = _int8(detector)
    assert quantized_network(qdet) is qm and quantized_network(detector) is None
    assert {qm.layer_precision[n] for n in keep} == {"fp32"}
    assert sum(p == "int8" for p in qm.layer_precision.values()) > 40
    # the float detector is untouched; the INT8 one computes close to it
    float_net = DetectorNetwork(detector).eval()
    batches = network_batches(detector, _images(4, seed=2))
    assert sqnr_db(float_net, heads_only(qm, 2), batches) > 15
    assert sqnr_db(float_net, runtime_network(qdet), batches) > 15
    assert not any(isinstance(m, type(qm)) for m in detector.modules())
    with torch.no_grad():
        out = qdet.eval()(_images(2))
    assert out[0]["boxes"].shape[1] == 4 and len(out) == 2
    # MACs are counted on the plain layers (BatchNorm folded: at most the float count)
    from deploykit.models import count_macs_params

    q_macs = count_macs_params(counting_network(qdet), (3, SIZE, SIZE))[0]
    f_macs = count_macs_params(counting_network(detector), (3, SIZE, SIZE))[0]
    assert 0.8 * f_macs < q_macs <= f_macs
    # train mode: the detector's own losses, with gradients into the quantized layers (QAT)
    from deploykit.tasks.detect.shapes import ShapesDetection

    ds = ShapesDetection(2, size=SIZE)
    qdet.train()
    losses = qdet([ds[i][0].float() / 255 for i in range(2)], [ds[i][1] for i in range(2)])
    sum(losses.values()).backward()
    grads = [m.layer.weight.grad for m in qm.quant_layers().values()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    qdet.eval()


@pytest.mark.slow
def test_the_split_export_matches_pytorch_for_float_and_int8(detector, tmp_path):
    import onnxruntime as ort

    from deploykit.tasks.detect.export import export_detector, export_detector_split

    qdet, _, _ = _int8(detector)
    images = _images(4, seed=3)
    whole = export_detector(detector, images, tmp_path / "whole.onnx")
    whole_s = ort.InferenceSession(str(whole), providers=["CPUExecutionProvider"])
    for tag, model in (("float", detector), ("int8", qdet)):
        path, net_path = export_detector_split(model, runtime_network(model), images,
                                               tmp_path / f"{tag}.onnx",
                                               tmp_path / f"{tag}.net.onnx")
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert "NonMaxSuppression" in ops or "If" in ops
        net_ops = [n.op_type for n in onnx.load(str(net_path)).graph.node]
        assert ("QuantizeLinear" in net_ops) == (tag == "int8")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for im in images:
            boxes, scores, labels = sess.run(None, {"images": im[None].numpy()})
            got = {"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores),
                   "labels": torch.from_numpy(labels)}
            with torch.no_grad():
                ref = model([im])[0]
            p = match_detections(ref, got, iou=0.5, top_k=model.detections_per_img)
            assert p.matched_fraction >= 0.9, (tag, p)
            assert p.max_score_diff < 1e-3, (tag, p)
            if tag == "float":   # the same graph as the one-piece export, in three parts
                one = whole_s.run(None, {"images": im[None].numpy()})
                assert torch.allclose(torch.from_numpy(one[1]), got["scores"], atol=1e-5)


def test_a_two_stage_detector_is_refused_before_training():
    from deploykit.recipe import QuantizeSpec
    from deploykit.stages import quantize
    from deploykit.tasks import get_task

    frcnn = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", 5, SIZE)
    with pytest.raises(ModelError, match=r"INT8 of two-stage detectors .* is not built"):
        quantize.check(frcnn, QuantizeSpec(), ("", ""), (3, SIZE, SIZE), get_task("detection"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn"])
def test_detectors_that_keep_the_aspect_ratio_go_int8_at_a_fixed_size(name, tmp_path):
    """RetinaNet and FCOS lay anchors out on the resized image; the INT8 candidate resizes to
    a fixed square, and its decoding takes the head outputs split per feature level."""
    import onnxruntime as ort

    from deploykit.recipe import QuantizeSpec
    from deploykit.stages import quantize
    from deploykit.tasks import get_task
    from deploykit.tasks.detect.export import export_detector_split, fixed_input_size

    size = 80                        # padded to 96 inside: network input != image size
    torch.manual_seed(0)
    det = build_detector(name, 5, size).eval()
    det.score_thresh = 0.0           # random weights: scores near the prior
    quantize.check(det, QuantizeSpec(), ("", ""), (3, size, size), get_task("detection"))
    assert fixed_input_size(det) is None
    det.transform.fixed_size = (size, size)       # what the stage does to its INT8 copy
    images = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(i))
              for i in range(3)]
    with torch.no_grad():
        ref_float = det(images[:1])[0]
    network = DetectorNetwork(det, with_features=True).eval()
    keep = detector_keep_float(network, ["first", "last"])
    assert len(keep) == 1 + len(head_keys(det, size))   # shared predictors over all levels
    qm = prepare(network, SCHEMES["onnxruntime-cpu"], keep)
    qm.calibrate(network_batches(det, images))
    qdet = quantized_detector(det, qm, head_keys(det, size)).eval()

    def run(sess, im):
        boxes, scores, labels = sess.run(None, {"images": im[None].numpy()})
        return {"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores),
                "labels": torch.from_numpy(labels)}

    for tag, model in (("float", det), ("int8", qdet)):
        path, net_path = export_detector_split(model, runtime_network(model), images,
                                               tmp_path / f"{tag}.onnx",
                                               tmp_path / f"{tag}.net.onnx")
        net = onnx.load(str(net_path)).graph
        assert [d.dim_value for d in net.input[0].type.tensor_type.shape.dim[1:]] == [3, 96, 96]
        assert any(n.op_type == "QuantizeLinear" for n in net.node) == (tag == "int8")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for im in images:
            got = run(sess, im)
            with torch.no_grad():
                ref = model([im])[0]
            # random weights score hundreds of boxes alike: match the 30 best
            floor = float(ref["scores"][min(29, len(ref["scores"]) - 1)])
            p = match_detections(ref, got, iou=0.5, min_score=floor)
            assert p.count_ref >= 25 and p.matched_fraction >= 0.9, (tag, p)
            if tag == "float":    # the per-level decoding is exact
                assert p.max_score_diff < 1e-4 and p.min_iou > 0.99, p
        if tag == "int8":         # the INT8 network file computes what the fake-quant one does
            x = network_batches(model, images[:1])[0]
            net_sess = ort.InferenceSession(str(net_path), providers=["CPUExecutionProvider"])
            outs = net_sess.run(None, {net_sess.get_inputs()[0].name: x.numpy()})
            with torch.no_grad():
                refs = runtime_network(model)(x)
            for o, r in zip(outs, refs, strict=True):
                err = (torch.from_numpy(o) - r).abs().max() / (r.max() - r.min())
                assert err < 0.1, err   # integer rounding through ResNet-50: 3-6% seen
    with torch.no_grad():   # the fake-quant detector stays close to the float one
        top_q, top_f = qdet(images[:1])[0]["scores"][0], ref_float["scores"][0]
    assert abs(float(top_q) - float(top_f)) < 0.02
