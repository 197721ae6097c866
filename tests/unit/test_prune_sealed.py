"""Blocks torch-pruning cannot see into (Swin's functional attention, attention that
multiplies queries by keys) are sealed while it traces: their layers and the channels that
reach them stay whole, the rest is pruned, and the history replays."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.models import count_macs_params
from deploykit.prune import layers_to_leave_whole, prune_to_macs, replay_pruning, sealed_blocks
from deploykit.recipe import PruneSpec

pytestmark = pytest.mark.slow


class _Attention(nn.Module):
    def __init__(self, dim: int, functional: bool) -> None:
        super().__init__()
        self.qkv, self.proj, self.functional = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), \
            functional

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # functional, as torchvision's Swin does: the layers' own forward never runs
        qkv = F.linear(x, self.qkv.weight, self.qkv.bias) if self.functional else self.qkv(x)
        q, k, v = qkv.reshape(x.shape[0], x.shape[1], 3, 2, -1).permute(2, 0, 3, 1, 4)
        out = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        out = out.transpose(1, 2).reshape(x.shape)
        return F.linear(out, self.proj.weight, self.proj.bias) if self.functional \
            else self.proj(out)


class _Block(nn.Module):
    def __init__(self, dim: int, functional: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, functional)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _TinyTransformer(nn.Module):
    def __init__(self, functional: bool, dim: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(_Block(dim, functional), _Block(dim, functional))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x).flatten(2).transpose(1, 2))
        return self.head(x.mean(1))


@pytest.mark.parametrize("functional", [True, False], ids=["functional", "attention-product"])
def test_sealed_attention_stays_whole_the_mlps_are_pruned_and_replay(functional):
    torch.manual_seed(0)
    model, shape = _TinyTransformer(functional).eval(), (3, 16, 16)
    example = torch.zeros(1, *shape)
    why = "functionally" if functional else "multiplies two activations"
    blocks = sealed_blocks(model, example)
    assert set(blocks) == {"blocks.0.attn", "blocks.1.attn"}
    assert all(why in w for w in blocks.values())
    whole = layers_to_leave_whole(model, example)
    qkv = whole["blocks.0.attn.qkv"]
    assert why in qkv and "inside blocks.0.attn" in qkv
    # the residual stream reaches the sealed block; the MLP's hidden channels do not
    assert "reach blocks" in whole["blocks.0.mlp.2"] and "reach blocks" in whole["stem"]
    assert "blocks.0.mlp.0" not in whole and "blocks.1.mlp.0" not in whole

    base = count_macs_params(model, shape)[0]
    spec = PruneSpec(target={"macs_ratio": 0.7}, round_to=None)
    pruned, hist, _ = prune_to_macs(model, shape, spec, ["head", *whole], int(0.7 * base),
                                    0.02 * base)
    assert abs(count_macs_params(pruned, shape)[0] / base - 0.7) <= 0.02
    assert pruned.get_submodule("blocks.0.mlp.0").out_features < 128
    assert pruned.get_submodule("blocks.0.attn.qkv").weight.shape == (96, 32)
    fresh = replay_pruning(_TinyTransformer(functional).eval(), [hist], shape)
    fresh.load_state_dict(pruned.state_dict())
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.allclose(fresh(x), pruned(x), atol=1e-6)
    assert "forward" not in vars(model.get_submodule("blocks.0.attn"))   # unsealed after


def test_swin_t_prunes_to_its_target_with_its_attention_sealed():
    """torchvision's swin_t: before sealing, torch-pruning's shape inference hit its recursion
    limit 1302 times and grouping then grew past 7 GiB."""
    import torchvision

    model = torchvision.models.swin_t(num_classes=10).eval()
    shape = (3, 224, 224)
    whole = layers_to_leave_whole(model, torch.zeros(1, *shape))
    assert "features.1.0.attn.qkv" in whole and "features.1.0.mlp.0" not in whole
    base = count_macs_params(model, shape)[0]
    spec = PruneSpec(target={"macs_ratio": 0.5}, round_to=8)
    pruned, _, _ = prune_to_macs(model, shape, spec, ["head", *whole], int(0.5 * base),
                                 0.02 * base)
    assert abs(count_macs_params(pruned, shape)[0] / base - 0.5) <= 0.02
    with torch.no_grad():
        assert pruned(torch.randn(1, *shape)).shape == (1, 10)
