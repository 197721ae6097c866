"""Helper for test_distributed: one ``fit`` on a tiny BN-free model and synthetic images.

Run directly under ``torchrun`` (each rank trains on its slice of every batch; rank 0 writes the
final weights to argv[1]) or imported and called in one process for the reference.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from deploykit.data import TensorLoader
from deploykit.host import distributed
from deploykit.recipe import TrainSpec
from deploykit.train import fit


def run(out: str | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(32, 4))
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (64, 3, 8, 8), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 4, (64,), generator=gen)
    train = TensorLoader(images, labels, 16, (0.5,) * 3, (0.25,) * 3, shuffle=True, pad=2,
                         flip=True, drop_last=True)
    val = TensorLoader(images[:16], labels[:16], 16, (0.5,) * 3, (0.25,) * 3)
    spec = TrainSpec(epochs=2, lr=0.05, schedule="cosine", device="cpu", grad_clip=5.0)
    seen = torch.zeros((), dtype=torch.long)

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.add_(len(y))
        return {"loss": nn.functional.cross_entropy(m(x), y)}

    fit(model, train, val, spec, desc="ddp-test", loss_fn=loss_fn)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["samples_seen_by_this_rank"] = seen
    if out is not None and distributed.is_main():
        torch.save(state, out)
    return state


if __name__ == "__main__":
    torch.set_num_threads(1)
    distributed.init_from_env()
    run(sys.argv[1])
