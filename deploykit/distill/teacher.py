"""The frozen teacher: one model or an ensemble, optionally at its own input resolution."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.models import split_outputs

__all__ = ["Teacher", "freeze"]


def freeze(model: nn.Module, bn_train: bool = False) -> nn.Module:
    """A frozen copy of ``model``: no gradients, eval mode.

    ``bn_train``: BatchNorm normalises with the batch's statistics (Heo et al. found this matters
    for feature distillation); momentum 0 keeps its running statistics unchanged.
    """
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    if bn_train:
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.train()
                mod.momentum = 0.0
    return m


class Teacher:
    """Frozen teacher model(s). ``__call__`` returns each model's logits, without gradients.

    ``image_size``: the teacher's input resolution. The loader's batch is the one augmented view
    (cropped once); the student and the teacher each get it resized to their own size ("crop
    once, resize twice", Beyer et al. 2022).
    """

    def __init__(self, models: Sequence[nn.Module], image_size: int | None = None,
                 bn_train: bool = False):
        if not models:
            raise ValueError("a teacher needs at least one model")
        self.models = [freeze(m, bn_train) for m in models]
        self.image_size = image_size
        self.bn_train = bn_train
        self.logits_only = False
        self._device = torch.device("cpu")

    def optimize_for_logits(self) -> list[str]:
        """Make the teacher cheaper when only its logits are used (no feature taps).

        BatchNorm is folded into the convolution before it (``torch.fx`` conv-bn fusion; exact
        up to float rounding, since the teacher is frozen in eval mode) and the models run in
        channels_last, which PyTorch's CPU and GPU convolutions are faster in. Feature taps
        hook named modules that the fused graph no longer calls, so feature losses keep the
        plain models. Returns a note per model that could not be fused (it stays as it was).
        """
        from torch.fx.experimental.optimization import fuse

        notes: list[str] = []
        if self.bn_train:   # BatchNorm on batch statistics cannot be folded
            return ["teacher.bn_train: BatchNorm not folded"]
        fast = []
        for i, m in enumerate(self.models):   # each is this teacher's own frozen copy
            try:
                m = fuse(m, inplace=True)
            except Exception as e:   # untraceable forward: keep the model unfused
                notes.append(f"teacher {i}: not fused ({type(e).__name__})")
            m.eval().requires_grad_(False)   # the fused convs' parameters are new
            fast.append(m.to(memory_format=torch.channels_last))
        self.models = fast
        self.logits_only = True
        return notes

    @property
    def main(self) -> nn.Module:
        """The model whose features feature losses use (the first one)."""
        return self.models[0]

    def to(self, device: str | torch.device) -> Teacher:
        device = torch.device(device)
        if device != self._device:
            self.models = [m.to(device) for m in self.models]
            self._device = device
        return self

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's input for the shared view ``x``."""
        if self.image_size is None or x.shape[-1] == self.image_size == x.shape[-2]:
            return x
        return F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False, antialias=True)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.to(x.device)
        xt = self.view(x)
        if self.logits_only:
            xt = xt.contiguous(memory_format=torch.channels_last)
        return [split_outputs(m(xt))[0].contiguous() for m in self.models]
