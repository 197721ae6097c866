"""The ``prune`` stage on a detector: the network (backbone, neck and head) is pruned with
torch-pruning to the recipe's target, the prediction convolutions left whole so the head's
output sizes (anchors x classes, anchors x 4) are kept; the resize, anchors, decoding and NMS
around it are untouched. On a two-stage detector (Faster R-CNN) the network is the backbone,
FPN and proposal head, with the FPN's output convs whole (the ROI heads read them), and the
box head that each proposal runs through (two wide linear layers: most of the parameters
and, over its proposals, most of the MACs) is pruned to the same target as a second graph,
its predictors whole. The pruning history is stored in ``checkpoints/prune.pt`` and
replayed on resume and by :func:`.checkpoint.load_detector`.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from deploykit.data import Loaders
from deploykit.errors import RecipeError
from deploykit.host import distributed
from deploykit.host.progress import log
from deploykit.models import count_macs_params, load_checkpoint, make_checkpoint
from deploykit.prune import (
    check_traceable,
    ignored_layer_names,
    prune_model,
    prune_to_macs,
)
from deploykit.recipe import PruneSpec
from deploykit.runfiles.atomic import save_torch
from deploykit.state import Candidate, PipelineState, StageRecord
from deploykit.tasks import task_of
from deploykit.tasks.detect.checkpoint import replay_detector_pruning
from deploykit.tasks.detect.metric import evaluate_detector
from deploykit.tasks.detect.models import (
    DetectorNetwork,
    RoiBoxNetwork,
    prediction_layers,
    roi_cost,
    with_network,
)
from deploykit.train import fit

__all__ = ["check", "run"]


def _ignored(network: DetectorNetwork, spec: PruneSpec) -> list[str]:
    """The prediction convs plus the recipe's ``ignored`` patterns (each must match)."""
    preds = prediction_layers(network)
    return sorted(set(ignored_layer_names(network, spec, preds[0])) | set(preds))


def check(model: nn.Module, spec: PruneSpec, first_last: tuple[str, str],
          input_shape: tuple[int, int, int] | None = None) -> None:
    """Refuse what the detector stage does not do, then trace the network once with
    torch-pruning (a detector it cannot prune fails here, before any training)."""
    t = spec.target
    if t.latency_ratio is not None or spec.sparsity is not None or \
            spec.importance in ("taylor", "bn_scale", "group_norm"):
        raise RecipeError("prune on a detector: use target.ratio or target.macs_ratio with "
                          "importance l1, l2 or random (latency targets, sparsity training and "
                          "gradient or BatchNorm criteria are classifier-only for now)")
    network = DetectorNetwork(model)
    if input_shape is not None:
        check_traceable(network.eval(), torch.zeros(1, *input_shape), spec,
                        _ignored(network, spec))


def _prune(module: nn.Module, shape: tuple[int, int, int], spec: PruneSpec,
           ignored: list[str], base_macs: int, metrics: dict, prefix: str = ""
           ) -> tuple[nn.Module, list]:
    """Prune ``module`` (in place for a ratio target, a pruned copy for a MACs target)."""
    t = spec.target
    if t.ratio is not None:
        return module, [prune_model(module, torch.zeros(1, *shape), spec, ignored, t.ratio)]
    module, history, probes = prune_to_macs(module, shape, spec, ignored,
                                            int(base_macs * t.macs_ratio),
                                            t.tolerance * base_macs)
    metrics[f"{prefix}probes"] = probes
    return module, [history]


def run(state: PipelineState, loaders: Loaders, spec: PruneSpec) -> PipelineState:
    """Prune a copy of the current detector's network (and a two-stage detector's box head,
    to the same target); add the candidate ``prune``."""
    t0 = time.perf_counter()
    shape = state.input_shape
    detector = copy.deepcopy(state.model).eval()
    network = DetectorNetwork(detector)
    base_macs, base_params = count_macs_params(network, shape)
    base_roi = roi_cost(detector)[0]
    ckpt = state.output_dir / "checkpoints" / "prune.pt"
    metrics: dict = {}
    arch: dict = {}
    if state.resume and ckpt.is_file():
        ck = load_checkpoint(ckpt)
        arch = ck["arch"]
        replay_detector_pruning(detector, arch, shape)
        detector.load_state_dict(ck["state_dict"])
        metrics = dict(ck["meta"].get("metrics", {}))
        log(f"prune: resumed from {ckpt}")
    else:
        network, arch["pruning_history"] = _prune(network, shape, spec,
                                                  _ignored(network, spec), base_macs, metrics)
        detector = with_network(detector, network)
        if network.two_stage:   # the box head runs once per proposal: often the larger part
            roi = RoiBoxNetwork(detector)
            roi, arch["roi_pruning_history"] = _prune(
                roi, roi.input_shape, spec, roi.prediction_layers(),
                base_roi // roi.proposals, metrics, "roi_")   # per proposal
            roi.put_back(detector)
        if spec.finetune is not None and spec.finetune.epochs > 0:
            res = fit(detector, loaders.train, loaders.val, spec.finetune,
                      state.output_dir / "checkpoints" / "prune-finetune", state.resume,
                      desc="prune fine-tune", objective=task_of(state, "detection").objective)
            metrics["finetune_map50_pct"] = res.final
        if distributed.is_main():
            save_torch(make_checkpoint(detector, arch, {"metrics": metrics}), ckpt)
    macs, params = count_macs_params(DetectorNetwork(detector), shape)
    metrics.update(network_macs=macs, network_macs_ratio=macs / base_macs,
                   params_ratio=params / base_params)
    msg = (f"prune: network MACs {base_macs / 1e6:.1f}M -> {macs / 1e6:.1f}M "
           f"({macs / base_macs:.2f}x)")
    if base_roi:
        roi_macs = roi_cost(detector)[0]
        metrics.update(roi_macs=roi_macs, roi_macs_ratio=roi_macs / base_roi)
        msg += (f"; box head over {RoiBoxNetwork(detector).proposals} proposals "
                f"{base_roi / 1e6:.1f}M -> {roi_macs / 1e6:.1f}M ({roi_macs / base_roi:.2f}x)")
    if "finetune_map50_pct" not in metrics:
        metrics["map50_pct"] = evaluate_detector(detector, loaders.val)["map50_pct"]
    log(msg)
    state.add_candidate(Candidate("prune", detector, arch=arch))
    state.history.append(StageRecord("prune", spec.model_dump(mode="json", by_alias=True),
                                     metrics, time.perf_counter() - t0))
    return state
