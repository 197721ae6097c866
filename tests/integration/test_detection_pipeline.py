"""A detection recipe end to end: train, prune the network, distil with Chen's terms, export
with decode + NMS, parity on matched boxes, mAP in both runtimes, latency, report, gate."""

from __future__ import annotations

import csv
import io

import pytest

from deploykit.cli import main
from deploykit.report import Report, compare_reports


def _recipe(**over) -> dict:
    recipe = {
        "name": "tiny-detect",
        "task": "detection",
        "model": {"source": "torchvision", "name": "ssdlite320_mobilenet_v3_large",
                  "num_classes": 5, "width_mult": 0.25},
        "data": {"kind": "shapes", "image_size": 64, "batch_size": 8, "eval_batch_size": 16,
                 "limit_train": 48, "limit_val": 16, "calib_samples": 8},
        "train": {"epochs": 2, "optimizer": "adamw", "lr": 3e-3, "schedule": "cosine"},
        "stages": [
            {"kind": "prune", "target": {"macs_ratio": 0.5}, "round_to": 8},
            {"kind": "distill", "losses": {"det_soft_ce": 0.5, "det_bounded_reg": 0.5,
                                           "det_hint": 1.0},
             "train": {"epochs": 1, "optimizer": "adamw", "lr": 1e-3, "schedule": "cosine"}},
            {"kind": "quantize"}],
        "bench": {"runtimes": ["onnxruntime-cpu"], "batch_sizes": [1], "iterations": 5,
                  "warmup": 1, "target_rel_ci": None},
        "gates": {"max_map_drop": 100.0, "max_size_mb": 5.0},
    }
    recipe.update(over)
    return recipe


@pytest.mark.slow
def test_a_detection_recipe_runs_end_to_end(write_yaml, tmp_path):
    out = tmp_path / "run"
    bench = {"runtimes": ["torch-cpu", "onnxruntime-cpu"], "batch_sizes": [1],
             "iterations": 5, "warmup": 1, "target_rel_ci": None}
    assert main(["run", str(write_yaml(_recipe(bench=bench))), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    assert [c.name for c in r.candidates] == ["baseline", "prune", "prune+distill",
                                              "ptq-int8"]
    base, pruned, distilled, int8 = r.candidates
    assert pruned.macs / base.macs == pytest.approx(0.5, abs=0.05)   # the network's MACs
    assert distilled.macs == pruned.macs                             # the adapter is not shipped
    assert int8.macs == pytest.approx(pruned.macs, rel=0.1)          # BatchNorm folded
    assert pruned.onnx_size_bytes < base.onnx_size_bytes
    # int8 weights: about a quarter of the float file (the float first and prediction convs,
    # the anchors and the decoding stay)
    assert int8.precision == "int8" and int8.onnx_size_bytes < 0.7 * distilled.onnx_size_bytes
    precisions = int8.arch["layer_precision"]
    assert precisions["backbone.features.0.0.0"] == "fp32"                    # first conv
    assert precisions["head.classification_head.module_list.0.1"] == "fp32"   # predictions
    assert sum(p == "int8" for p in precisions.values()) > len(precisions) / 2
    for c in r.candidates:
        assert set(c.map50_pct) == {"torch-cpu", "onnxruntime-cpu"}
        assert abs(c.map50_pct["torch-cpu"] - c.map50_pct["onnxruntime-cpu"]) < 1.0
        assert c.parity["matched_fraction"] >= 0.95 and c.parity["min_iou"] > 0.9
        assert c.latency[0].batch == 1 and c.network_latency[0].p50_ms > 0
        # a detector runs on the PyTorch runtime too: the same end-to-end signature, named
        # outputs; its network alone beside it
        timed = {"onnxruntime-cpu"} if c.precision == "int8" else {"torch-cpu",
                                                                    "onnxruntime-cpu"}
        for rows in (c.latency, c.network_latency):
            assert {lr.key for lr in rows} == timed
        assert (out / c.onnx_file).is_file()
        assert (out / "onnx" / f"{c.name}.network.onnx").is_file()
    assert pruned.delta_map50_pts == pytest.approx(
        pruned.map50_pct["onnxruntime-cpu"] - base.map50_pct["onnxruntime-cpu"])
    distill = r.stages[-2]["metrics"]
    assert distill["terms"] == ["det_soft_ce", "det_bounded_reg", "det_hint"]
    assert {"train_det_soft_ce", "train_det_bounded_reg", "train_det_hint"} <= set(
        distill["history"][0])
    assert r.gate["passed"] and {c["name"] for c in r.gate["checks"]} >= {"max_map_drop"}
    md = (out / "report.md").read_text()
    assert "mAP@.5 ORT" in md and "end to end" in md and "than baseline" in md
    assert r.task == "detection" and r.primary_metric == "map50_pct"
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert float(rows[-1]["map50_artifact_pct"]) == pytest.approx(
        int8.map50_pct["onnxruntime-cpu"])
    assert float(rows[-1]["delta_map50_pts"]) == pytest.approx(int8.delta_map50_pts)
    assert "map_artifact_pct" in rows[0] and "top1_artifact_pct" not in rows[0]
    compared = compare_reports(r, r)
    assert ("ptq-int8", "mAP@.5 artifact (%)") in {row[:2] for row in compared.rows}
    assert (out / "prune.pt").is_file()


def test_detection_recipes_refuse_what_does_not_fit(write_yaml, capsys):
    bad = [
        ({"data": {"kind": "digits"}}, "does not fit task 'detection'"),
        ({"model": {"source": "builtin", "name": "resnet20", "num_classes": 5}},
         "a detector comes from torchvision"),
        ({"stages": [{"kind": "lowrank"}]}, "does not run on detectors yet"),
        ({"stages": [{"kind": "prune", "target": {"macs_ratio": 0.5}},
                     {"kind": "distill", "losses": {"kd": 1.0}}]}, "classifier terms"),
        ({"gates": {"max_accuracy_drop": 1.0}}, "use gates.max_map_drop"),
        ({"stages": [{"kind": "quantize", "max_accuracy_drop": 1.0}]},
         "stages[0].max_accuracy_drop is top-1; a detector falls back on mAP"),
        ({"stages": [{"kind": "quantize", "fp16": True}]}, "fp16 and speed_check are"),
        ({"export": {"onnx": {"opset": 17}}}, "set export.onnx.opset: 18"),
        ({"stages": [{"kind": "quantize", "sensitivity": {"method": "only"}}]},
         "metric: sqnr"),
        ({"bench": {"runtimes": ["onnxruntime-cpu"], "batch_sizes": [1, 8]}},
         "a detector is timed at batch 1"),
    ]
    for over, message in bad:
        assert main(["inspect", str(write_yaml(_recipe(**over)))]) != 0, over
        assert message in capsys.readouterr().err, over
    classifier = {"name": "c", "model": {"name": "resnet20"}, "data": {"kind": "digits"},
                  "gates": {"max_map_drop": 1.0}}
    assert main(["inspect", str(write_yaml(classifier))]) != 0
    assert "max_map_drop is for detectors" in capsys.readouterr().err
    classifier.pop("gates")
    classifier["stages"] = [{"kind": "quantize", "max_map_drop": 1.0}]
    assert main(["inspect", str(write_yaml(classifier))]) != 0
    assert "stages[0].max_map_drop is for detectors" in capsys.readouterr().err


@pytest.mark.slow
def test_a_detector_that_keeps_the_aspect_ratio_goes_int8_through_a_recipe(write_yaml, tmp_path):
    """FCOS lays its anchors out on the resized image: its INT8 candidate gets a fixed square
    input, the image size padded to 96 inside, and both candidates' network files and
    latencies use that padded batch."""
    import onnx

    recipe = _recipe(
        model={"source": "torchvision", "name": "fcos_resnet50_fpn", "num_classes": 5,
               "detections": {"score_thresh": 0.001}},
        data={"kind": "shapes", "image_size": 80, "batch_size": 4, "eval_batch_size": 8,
              "limit_train": 8, "limit_val": 8, "calib_samples": 8},
        train={"epochs": 1, "optimizer": "adamw", "lr": 1e-3, "schedule": "cosine"},
        stages=[{"kind": "quantize"}], gates={"max_map_drop": 100.0})
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 0
    r = Report.load(out / "report.json")
    base, int8 = r.candidates
    assert int8.precision == "int8"
    assert sum(p == "int8" for p in int8.arch["layer_precision"].values()) > 50
    assert int8.onnx_size_bytes < 0.5 * base.onnx_size_bytes
    for c in r.candidates:
        assert c.parity["matched_fraction"] >= 0.95
        assert c.network_latency[0].p50_ms > 0 and c.latency[0].p50_ms > 0
        net = onnx.load(str(out / "onnx" / f"{c.name}.network.onnx")).graph
        assert [d.dim_value for d in net.input[0].type.tensor_type.shape.dim[2:]] == [96, 96]


def test_detector_settings_the_stages_do_not_do_are_refused_before_training(write_yaml,
                                                                            tmp_path, capsys):
    """The detection task's recipe checks run before the baseline trains, each naming the
    stage and the fix."""
    recipe = _recipe(stages=[{"kind": "prune", "target": {"latency_ratio": 0.5}},
                             {"kind": "distill", "teacher": {"image_size": 32}}])
    out = tmp_path / "run"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stages[0]: prune on a detector: use target.ratio or target.macs_ratio" in err
    assert "stages[1].teacher: distill on a detector" in err
    assert not (out / "baseline.pt").exists()
