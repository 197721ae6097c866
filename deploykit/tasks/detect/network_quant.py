"""INT8 detectors: the network (backbone, neck and head) becomes the fake-quant graph of
:func:`deploykit.quant.prepare.prepare`; the resize, anchors, box decoding and NMS around it
stay float.

The network is traced with its feature maps as extra outputs, because the detector lays its
anchors out on their sizes. :func:`quantized_detector` puts the quantized network back into a
copy of the detector: the backbone slot runs it and hands the feature maps on, and the head
slot hands on the head outputs that same call computed. The detector's own ``forward``
(training losses, decoding, NMS) runs unchanged around it, so mAP, QAT and export treat the
INT8 detector like any other.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from deploykit.quant.prepare import QuantizedModel, compute_layers, resolve_keep_float
from deploykit.tasks.detect.models import DetectorNetwork, backbone_features, prediction_layers

__all__ = ["HeadOutputs", "QuantNetworkBackbone", "counting_network", "detector_keep_float",
           "head_keys", "heads_only", "network_batches", "quantized_detector", "quantized_network",
           "runtime_network"]


class QuantNetworkBackbone(nn.Module):
    """The backbone slot of an INT8 detector: runs the whole quantized network, returns its
    feature maps and keeps the head outputs for :class:`HeadOutputs`."""

    def __init__(self, qnet: QuantizedModel, keys: Sequence[str]) -> None:
        super().__init__()
        self.qnet = qnet
        self.keys = tuple(keys)
        self.pending: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out = self.qnet(x)
        n = len(self.keys)
        self.pending = dict(zip(self.keys, out[:n], strict=True))
        return OrderedDict((str(i), f) for i, f in enumerate(out[n:]))


class HeadOutputs(nn.Module):
    """The head slot of an INT8 detector: the head outputs the backbone slot just computed."""

    def __init__(self, backbone: QuantNetworkBackbone) -> None:
        super().__init__()
        self._source = [backbone]   # a list: not a submodule, so no parameter is counted twice

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        source = self._source[0]
        out, source.pending = source.pending, None
        if out is None:
            raise RuntimeError("the INT8 detector's head ran without its backbone")
        return out


class _Heads(nn.Module):
    """The quantized network without its feature-map outputs: the graph a runtime executes."""

    def __init__(self, qnet: QuantizedModel, n: int) -> None:
        super().__init__()
        self.qnet, self.n = qnet, n

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.qnet(x)[:self.n])

    def export_context(self):
        return self.qnet.export_context()


def heads_only(qnet: QuantizedModel, n: int) -> nn.Module:
    """``qnet`` (traced with feature maps) without the feature-map outputs: its first ``n``."""
    return _Heads(qnet, n)


def head_keys(detector: nn.Module, image_size: int) -> list[str]:
    """The names of ``detector``'s head outputs, in order (e.g. bbox_regression, cls_logits)."""
    was = detector.training
    detector.eval()
    with torch.no_grad():
        feats = backbone_features(detector, torch.zeros(1, 3, image_size, image_size))
        keys = list(detector.head(feats).keys())
    detector.train(was)
    return keys


def quantized_detector(detector: nn.Module, qnet: QuantizedModel, keys: Sequence[str]
                       ) -> nn.Module:
    """A copy of ``detector`` whose network is ``qnet`` (traced from
    ``DetectorNetwork(detector, with_features=True)``); ``keys`` from :func:`head_keys`."""
    backbone, head = detector.backbone, detector.head
    detector.backbone, detector.head = nn.Identity(), nn.Identity()   # not copied
    try:
        out = copy.deepcopy(detector)
    finally:
        detector.backbone, detector.head = backbone, head
    out.backbone = QuantNetworkBackbone(qnet, keys)
    out.head = HeadOutputs(out.backbone)
    return out


def quantized_network(detector: nn.Module) -> QuantizedModel | None:
    """The fake-quant network inside an INT8 detector; ``None`` for a float one."""
    backbone = getattr(detector, "backbone", None)
    return backbone.qnet if isinstance(backbone, QuantNetworkBackbone) else None


def runtime_network(detector: nn.Module) -> nn.Module:
    """What a runtime executes between resize and decoding: the resized batch in, the head
    outputs out (the fake-quant graph with its export hook for an INT8 detector)."""
    qnet = quantized_network(detector)
    if qnet is None:
        return DetectorNetwork(detector)
    return heads_only(qnet, len(detector.backbone.keys))


def counting_network(detector: nn.Module) -> nn.Module:
    """The network with plain conv/linear layers, for counting MACs and parameters."""
    qnet = quantized_network(detector)
    return DetectorNetwork(detector) if qnet is None else qnet.float_equivalent()


def detector_keep_float(network: DetectorNetwork, patterns: Iterable[str]) -> list[str]:
    """Layer names (in ``network``) to keep float: ``first`` is the first convolution, ``last``
    the heads' prediction convolutions (one per head and feature level), other patterns match
    module names (fnmatch).

    Raises:
        ModelError: a pattern that matches no conv/linear layer.
    """
    patterns = list(patterns)
    keep = resolve_keep_float(network, [p for p in patterns if p not in ("first", "last")],
                              ("", ""))
    if "first" in patterns:
        keep.insert(0, compute_layers(network)[0])
    if "last" in patterns:
        keep += [n for n in prediction_layers(network) if n not in keep]
    return keep


@torch.no_grad()
def network_batches(detector: nn.Module, images: Sequence[torch.Tensor], batch: int = 16
                    ) -> list[torch.Tensor]:
    """``images`` (``(3, H, W)``, 0..1) as the network sees them: resized and normalised by
    the detector's own transform, in batches."""
    was = detector.training
    detector.eval()
    out = [detector.transform(list(images[i:i + batch]))[0].tensors
           for i in range(0, len(images), batch)]
    detector.train(was)
    return out
