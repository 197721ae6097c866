"""Detectors: torchvision's detection models with random weights (no downloads), at the input
size the recipe asks for.

``num_classes`` counts the object classes; torchvision's detectors count the background too,
so the model is built with ``num_classes + 1`` (label 0 is the background). SSDlite takes a
backbone ``width_mult`` (0.5 trains from scratch on two CPU cores); every detector's resize
step is set to ``image_size`` (SSDlite resizes to a fixed square, the others keep the aspect
ratio up to ``image_size``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from deploykit.errors import ModelError
from deploykit.models.cost import count_macs_params
from deploykit.tasks.base import Graph

__all__ = ["DETECTORS", "DetectorNetwork", "RoiBoxNetwork", "backbone_features",
           "build_detector", "detector_from_spec", "detector_graphs", "is_two_stage",
           "keep_detections",
           "prediction_layers", "roi_cost", "with_network"]


def _ssdlite(num_classes: int, width_mult: float) -> nn.Module:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                         num_classes=num_classes, width_mult=width_mult)


def _torchvision(name: str) -> Callable[[int, float], nn.Module]:
    def build(num_classes: int, width_mult: float) -> nn.Module:
        import torchvision.models.detection as det

        if width_mult != 1.0:
            raise ModelError(f"model.width_mult: {name} has no width multiplier (only "
                             "ssdlite320_mobilenet_v3_large does); remove it, or prune the "
                             "model to make it smaller")
        return getattr(det, name)(weights=None, weights_backbone=None, num_classes=num_classes)

    return build


DETECTORS: dict[str, Callable[[int, float], nn.Module]] = {
    "ssdlite320_mobilenet_v3_large": _ssdlite,
    "fasterrcnn_mobilenet_v3_large_320_fpn": _torchvision("fasterrcnn_mobilenet_v3_large_320_fpn"),
    "retinanet_resnet50_fpn_v2": _torchvision("retinanet_resnet50_fpn_v2"),
    "fcos_resnet50_fpn": _torchvision("fcos_resnet50_fpn"),
}


def detector_from_spec(spec: Any, image_size: int) -> nn.Module:
    """The recipe's detector: a torchvision one by name, or ``factory``'s
    ``function(num_classes=N + 1)`` (torchvision's count, background included), which must
    follow torchvision's detection interface (a list of images in; in train mode a dict of
    losses, in eval mode a list of ``boxes``/``scores``/``labels`` dicts).

    Raises:
        ModelError: an unknown detector, or a factory model without that interface.
    """
    if spec.source == "torchvision":
        model = build_detector(spec.name, spec.num_classes, image_size, spec.width_mult or 1.0)
    else:
        from deploykit.models.build import build_factory

        model = build_factory(spec.name, spec.num_classes + 1)
        if not hasattr(model, "transform"):
            raise ModelError(f"model.name: {spec.name} returned a {type(model).__name__} "
                             "without a transform; a detector follows torchvision's detection "
                             "interface (e.g. torchvision.models.detection.SSD)")
        _set_size(model, image_size)
    if spec.detections is not None:
        keep_detections(model, **spec.detections.model_dump(exclude_none=True))
    return model


def keep_detections(model: nn.Module, **settings: float) -> None:
    """Set ``score_thresh``, ``topk_candidates`` and ``detections_per_img`` on ``model`` (or on
    its ``roi_heads``, for Faster R-CNN), as ``model.detections`` asks.

    Raises:
        ModelError: the detector has no such setting.
    """
    for key, value in settings.items():
        owner = next((m for m in (model, getattr(model, "roi_heads", None))
                      if m is not None and hasattr(m, key)), None)
        if owner is None:
            raise ModelError(f"model.detections.{key}: {type(model).__name__} has no such "
                             "setting; remove it")
        setattr(owner, key, value)


def _set_size(model: nn.Module, image_size: int) -> None:
    t = model.transform
    t.min_size, t.max_size = (image_size,), image_size
    if getattr(t, "fixed_size", None) is not None:
        t.fixed_size = (image_size, image_size)


def build_detector(name: str, num_classes: int, image_size: int, width_mult: float = 1.0
                   ) -> nn.Module:
    """Build detector ``name`` for ``num_classes`` object classes at ``image_size`` pixels.

    Raises:
        ModelError: an unknown detector, or a width multiplier for one that has none.
    """
    if name not in DETECTORS:
        raise ModelError(f"model.name: unknown detector {name!r}; choose one of: "
                         f"{', '.join(DETECTORS)}")
    model = DETECTORS[name](num_classes + 1, width_mult)
    _set_size(model, image_size)
    return model


def is_two_stage(detector: nn.Module) -> bool:
    """Whether ``detector`` is a torchvision two-stage detector (region proposals, then ROI
    heads: Faster R-CNN and its kin)."""
    return hasattr(detector, "backbone") and hasattr(getattr(detector, "rpn", None), "head") \
        and hasattr(detector, "roi_heads")


class DetectorNetwork(nn.Module):
    """The convolutional network of a torchvision detector, without the resize, anchors,
    decoding and NMS around it.

    A single-stage detector's is its backbone, any neck, and head: ``(B, 3, H, W)`` -> the
    head's outputs over all ``A`` anchors: class logits ``(B, A, C)``, box regression
    ``(B, A, 4)`` (and FCOS's centerness ``(B, A, 1)``). A two-stage detector's (Faster R-CNN)
    is its backbone (with the FPN) and the region proposal head: the objectness maps of each
    feature level, then their box deltas, then the feature maps themselves, which the ROI
    heads (after the proposals, outside the network) read.

    It shares its modules with the detector: what torch-pruning removes from it is removed
    from the detector too, and :func:`with_network` puts a pruned copy back into a detector.
    """

    def __init__(self, detector: nn.Module, with_features: bool = False) -> None:
        super().__init__()
        self.two_stage = is_two_stage(detector)
        if self.two_stage:
            self.backbone, self.head = detector.backbone, detector.rpn.head
        elif hasattr(detector, "backbone") and hasattr(detector, "head"):
            self.backbone, self.head = detector.backbone, detector.head
        else:
            raise ModelError(f"{type(detector).__name__} has neither a backbone + head pair "
                             "(single-stage: SSD, RetinaNet, FCOS) nor a backbone + rpn.head + "
                             "roi_heads (two-stage: Faster R-CNN), as torchvision's detectors do")
        self.with_features = with_features or self.two_stage

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The head's outputs; with ``with_features`` (always for a two-stage detector), the
        feature maps follow them (the anchors are laid out on their sizes)."""
        feats = backbone_features(self, x)
        if self.two_stage:
            objectness, deltas = self.head(feats)
            heads = (*objectness, *deltas)
        else:
            heads = tuple(self.head(feats).values())
        return (*heads, *feats) if self.with_features else heads


def backbone_features(detector: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The feature maps ``detector.backbone`` gives for the batch ``x``, as the list a
    single-stage head reads (a backbone returning one tensor gives a list of one)."""
    feats = detector.backbone(x)
    return list(feats.values()) if isinstance(feats, dict) else [feats]


def _last_conv(prefix: str, module: nn.Module) -> str:
    """The name, under ``prefix``, of ``module``'s last convolution (``module`` itself if it
    is one)."""
    last = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)][-1]
    return f"{prefix}.{last}" if last else prefix


def prediction_layers(network: DetectorNetwork) -> list[str]:
    """Names (in ``network``) of the convolutions whose output sizes are fixed by what reads
    them, so pruning must leave their outputs whole: each head's last layer per feature level
    (anchors x classes, anchors x 4); on a two-stage detector the proposal head's two
    predictors and the layers emitting the feature maps that the ROI heads read (the FPN's
    output convs, or the backbone's last conv when it has no FPN)."""
    if network.two_stage:
        names = [f"head.{n}" for n, m in network.head.named_children()
                 if isinstance(m, nn.Conv2d)]
        fpn = getattr(network.backbone, "fpn", None)
        blocks = list(getattr(fpn, "layer_blocks", [])) if fpn is not None else []
        if blocks:
            names += [_last_conv(f"backbone.fpn.layer_blocks.{i}", b)
                      for i, b in enumerate(blocks)]
        elif any(isinstance(m, nn.Conv2d) for m in network.backbone.modules()):
            names.append(_last_conv("backbone", network.backbone))
        return names
    names = []
    for head_name, head in network.head.named_children():
        module_list = getattr(head, "module_list", None)
        if module_list is not None:   # SSD / SSDlite: one predictor per feature level
            names += [_last_conv(f"head.{head_name}.module_list.{i}", block)
                      for i, block in enumerate(module_list)]
        else:                         # RetinaNet / FCOS: shared convs, then the predictors
            names += [f"head.{head_name}.{n}" for n, m in head.named_children()
                      if isinstance(m, nn.Conv2d)]
    return names


def with_network(detector: nn.Module, network: DetectorNetwork) -> nn.Module:
    """A copy of ``detector`` whose backbone and head are ``network``'s (a pruned copy)."""
    out = copy.deepcopy(detector)
    out.backbone = network.backbone
    if network.two_stage:
        out.rpn.head = network.head
    else:
        out.head = network.head
    return out


class RoiBoxNetwork(nn.Module):
    """A two-stage detector's box head and box predictor, the layers each proposal runs
    through after ROI pooling: pooled features ``(N, C, h, w)`` -> class logits ``(N, K)``
    and box deltas ``(N, 4K)``. It shares its modules with the detector, as
    :class:`DetectorNetwork` does; :meth:`put_back` puts a pruned copy into a detector."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        roi = detector.roi_heads
        self.box_head, self.box_predictor = roi.box_head, roi.box_predictor
        size = roi.box_roi_pool.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.input_shape = (int(detector.backbone.out_channels), int(size[0]), int(size[1]))
        rpn, was = detector.rpn, detector.rpn.training
        rpn.eval()
        self.proposals = int(rpn.post_nms_top_n())   # proposals per image at inference
        rpn.train(was)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.box_predictor(self.box_head(x))

    def prediction_layers(self) -> list[str]:
        """The predictors, whose outputs (classes, 4 x classes) stay whole."""
        return [f"box_predictor.{n}" for n, m in self.box_predictor.named_children()
                if isinstance(m, nn.Linear | nn.Conv2d)]

    def put_back(self, detector: nn.Module) -> nn.Module:
        """``detector`` (changed in place) with this box head and predictor."""
        detector.roi_heads.box_head = self.box_head
        detector.roi_heads.box_predictor = self.box_predictor
        return detector


def roi_cost(detector: nn.Module) -> tuple[int, int]:
    """MACs and parameters of a two-stage detector's box head and predictor at inference,
    over all the proposals it keeps per image (``(0, 0)`` for a single-stage detector): the
    part of its cost that :class:`DetectorNetwork` does not hold."""
    if not is_two_stage(detector):
        return 0, 0
    roi = RoiBoxNetwork(detector)
    macs, params = count_macs_params(roi, roi.input_shape)
    return macs * roi.proposals, params


def detector_graphs(detector: nn.Module, input_shape: tuple[int, int, int]) -> list[Graph]:
    """What pruning rewrites in ``detector``: its network (backbone, neck and heads; the
    prediction convs' outputs whole, so the head's output sizes, anchors x classes and
    anchors x 4, are kept; a two-stage detector's FPN output convs too, which the ROI heads
    read) and, on a two-stage detector (Faster R-CNN), the box head each proposal runs through
    (two wide linear layers: most of the parameters and, over its proposals, most of the
    MACs), its predictors whole. Their histories are stored under ``pruning_history`` and
    ``roi_pruning_history``."""
    network = DetectorNetwork(detector)
    graphs = [Graph(network, input_shape, tuple(prediction_layers(network)),
                    prefix="network_", find_opaque=False, put_back=with_network)]
    if network.two_stage:
        roi = RoiBoxNetwork(detector)
        graphs.append(Graph(roi, roi.input_shape, tuple(roi.prediction_layers()),
                            prefix="roi_", history_key="roi_pruning_history",
                            runs_per_input=roi.proposals, user_patterns=False,
                            find_opaque=False, put_back=_put_back_roi))
    return graphs


def _put_back_roi(detector: nn.Module, roi: nn.Module) -> nn.Module:
    return roi.put_back(detector)
