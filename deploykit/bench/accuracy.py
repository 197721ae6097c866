"""Top-1/top-5 accuracy of any Runner: the exported artifact is measured, not a torch proxy."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from deploykit.runtimes import Runner

__all__ = ["runner_accuracy"]


def runner_accuracy(runner: Runner, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
                    ) -> dict[str, float]:
    """Percent top-1 and top-5 of ``runner`` over ``loader``'s ``(images, labels)`` batches."""
    c1 = c5 = n = 0
    for x, y in loader:
        logits = runner(x.numpy().astype(np.float32))
        labels = y.numpy()
        k = min(5, logits.shape[1])
        top = np.argsort(-logits, axis=1)[:, :k]
        c1 += int((top[:, 0] == labels).sum())
        c5 += int((top == labels[:, None]).any(axis=1).sum())
        n += len(labels)
    return {"top1_pct": 100.0 * c1 / max(n, 1), "top5_pct": 100.0 * c5 / max(n, 1),
            "samples": n}
