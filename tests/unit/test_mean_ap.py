"""COCO mAP through torchmetrics: 100 on a perfect prediction, less on a worse one, clear
errors on malformed input."""

from __future__ import annotations

import pytest
import torch

from deploykit.errors import DataError
from deploykit.tasks.detect.metric import mean_average_precision
from deploykit.tasks.detect.shapes import render_scene


def _targets(n: int = 20) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": s.boxes, "labels": s.labels}
            for s in (render_scene((5, i), 128) for i in range(n))]


def _perfect(targets):
    return [{**t, "scores": torch.linspace(0.9, 0.5, len(t["labels"]))} for t in targets]


def test_a_perfect_prediction_scores_100_and_a_shifted_one_less():
    targets = _targets()
    assert mean_average_precision(_perfect(targets), targets).map_pct == pytest.approx(100.0)
    res = mean_average_precision(_perfect(targets), targets)
    assert res.map50_pct == pytest.approx(100.0) and res.images == 20
    # every box moved by a tenth of its size both ways (IoU 0.68): matched at .50-.65 of the
    # ten thresholds, so 4 of 10
    shifted = [{**p, "boxes": p["boxes"] + (p["boxes"][:, 2:] - p["boxes"][:, :2]).repeat(1, 2)
                * 0.1} for p in _perfect(targets)]
    res = mean_average_precision(shifted, targets)
    assert res.map50_pct == pytest.approx(100.0) and res.map_pct == pytest.approx(40.0, abs=1)
    # the wrong class everywhere: nothing matches (but a box that happens to cover another shape)
    wrong = [{**p, "labels": p["labels"] % 5 + 1} for p in _perfect(targets)]
    assert mean_average_precision(wrong, targets).map_pct < 1.0


def test_malformed_detections_are_clear_errors():
    targets = _targets(2)
    preds = _perfect(targets)
    with pytest.raises(DataError, match="1 predictions for 2 images"):
        mean_average_precision(preds[:1], targets)
    bad = [{**preds[0], "scores": preds[0]["scores"][:-1]}, preds[1]]
    with pytest.raises(DataError, match=r"prediction of image 0: \d+ boxes but \d+ scores"):
        mean_average_precision(bad, targets)
    with pytest.raises(DataError, match=r"target of image 1: missing \['labels'\]"):
        mean_average_precision(preds, [targets[0], {"boxes": targets[1]["boxes"]}])
