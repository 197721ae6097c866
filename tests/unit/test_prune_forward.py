"""A module that keeps channel counts of its own (split sizes) breaks after torch-pruning
removes channels: timm's MixedConv2d layout is updated; any other such module is named in a
clear error before training."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from deploykit.errors import ModelError
from deploykit.models import count_macs_params
from deploykit.prune import check_traceable, prune_to_macs, replay_pruning
from deploykit.recipe import PruneSpec


class _Mixed(nn.ModuleDict):
    """timm's MixedConv2d layout: split the channels, one depthwise conv per split."""

    def __init__(self, channels: int) -> None:
        super().__init__({"0": nn.Conv2d(channels // 2, channels // 2, 3, padding=1,
                                         groups=channels // 2),
                          "1": nn.Conv2d(channels // 2, channels // 2, 5, padding=2,
                                         groups=channels // 2)})
        self.splits = [channels // 2, channels // 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, 1)
        return torch.cat([c(p) for c, p in zip(self.values(), parts, strict=True)], 1)


class _OwnSizes(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(channels // 2, channels // 2, 3, padding=1, groups=channels // 2)
        self.b = nn.Conv2d(channels // 2, channels // 2, 3, padding=1, groups=channels // 2)
        self.sizes = (channels // 2, channels // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, self.sizes, 1)
        return torch.cat([self.a(a), self.b(b)], 1)


def _net(mix: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), mix(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 4)).eval()


def test_mixed_conv_split_sizes_follow_the_pruned_channels():
    model, shape = _net(_Mixed), (3, 16, 16)
    spec = PruneSpec(target={"macs_ratio": 0.6}, round_to=None)
    check_traceable(model, torch.zeros(1, *shape), spec, ["7"])
    base = count_macs_params(model, shape)[0]
    pruned, hist, _ = prune_to_macs(model, shape, spec, ["7"], int(0.6 * base), 0.02 * base)
    mixed = pruned.get_submodule("2")
    assert sum(mixed.splits) < 32 and mixed.splits == [c.in_channels for c in mixed.values()]
    fresh = replay_pruning(_net(_Mixed), [hist], shape)
    fresh.load_state_dict(pruned.state_dict())
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.allclose(fresh(x), pruned(x), atol=1e-6)


def test_a_module_with_its_own_channel_counts_is_named_before_training():
    model = _net(_OwnSizes)
    spec = PruneSpec(target={"macs_ratio": 0.6})
    with pytest.raises(ModelError, match=r"after pruning, Sequential's forward fails in 2 "
                                         r"\(_OwnSizes\) with RuntimeError: .*split.*add it to "
                                         r"prune.ignored"):
        check_traceable(model, torch.zeros(1, 3, 16, 16), spec, ["7"])


class _PartialResidual(nn.Module):
    """ReXNet's block: the shortcut is added to the first channels only, then concatenated."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cin = cin
        self.a, self.b = nn.Conv2d(cin, 2 * cin, 1), nn.Conv2d(2 * cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(torch.relu(self.a(x)))
        return torch.cat([y[:, :self.cin] + x, y[:, self.cin:]], 1)


def test_a_pruning_group_that_never_closes_is_stopped_within_seconds():
    # each block multiplies torch-pruning's index sets: 8 blocks grow one group past 20,000
    # entries in half a minute (and rexnet_100 for hours); the bound stops it at 2,000
    import time

    widths = [8 + 4 * i for i in range(9)]
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                          *[_PartialResidual(a, b) for a, b in itertools.pairwise(widths)],
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 4)).eval()
    spec = PruneSpec(target={"macs_ratio": 0.6}, round_to=None)
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match=r"the pruning group of \S+ grew past 2,000 entries "
                                         r"without closing.*add \S+ \(or its block\) to "
                                         r"prune.ignored"):
        check_traceable(model, torch.zeros(1, 3, 8, 8), spec, ["10"])
    assert time.perf_counter() - t0 < 60
    # a model whose groups close is untouched by the bound
    check_traceable(_net(_Mixed), torch.zeros(1, 3, 16, 16), spec, ["7"])
