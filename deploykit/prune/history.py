"""A pruned architecture stored as data: torch-pruning's replayable pruning history.

A pruned model is saved as ``{"pruning_history": [round, ...]}`` (each round a list of
``[layer_name, is_out_channels, [indices]]``) next to a plain ``state_dict``; loading builds the
original network, replays the history, then loads the weights with ``weights_only=True``. No
class is ever pickled.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deploykit.prune.opaque import tp_tracing

__all__ = ["HistoryRound", "fix_pruned_attributes", "replay_pruning"]

HistoryRound = list[list[Any]]


def fix_pruned_attributes(model: nn.Module) -> nn.Module:
    """Update attributes some architectures read in ``forward`` after their widths change."""
    from torchvision.models.vision_transformer import VisionTransformer

    for m in model.modules():
        if isinstance(m, VisionTransformer):
            m.hidden_dim = m.conv_proj.out_channels
        splits = getattr(m, "splits", None)   # timm's MixedConv2d: split sizes by channel
        if (isinstance(m, nn.ModuleDict) and isinstance(splits, list) and len(splits) == len(m)
                and all(isinstance(c, nn.Conv2d) for c in m.values())):
            m.splits = [c.in_channels for c in m.values()]
            m.in_channels, m.out_channels = sum(m.splits), sum(c.out_channels for c in m.values())
        if isinstance(m, nn.MultiheadAttention):
            m.embed_dim = m.in_proj_weight.shape[1] if m.in_proj_weight is not None else \
                m.embed_dim
            m.kdim = m.vdim = m.embed_dim
            m.head_dim = m.embed_dim // m.num_heads
    return model


def replay_pruning(model: nn.Module, history: list[HistoryRound],
                   input_shape: tuple[int, int, int]) -> nn.Module:
    """Apply a recorded pruning history, round by round, to a freshly built ``model``."""
    import torch_pruning as tp

    for rnd in history:
        if not rnd:
            continue
        example = torch.zeros(1, *input_shape)
        with tp_tracing(model, example):   # the recorded groups avoid what it seals or skips
            graph = tp.DependencyGraph().build_dependency(model, example)
            graph.load_pruning_history([(str(n), bool(o), [int(i) for i in idx])
                                        for n, o, idx in rnd])
        fix_pruned_attributes(model)
    return model
