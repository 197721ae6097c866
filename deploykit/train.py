"""The one training loop every stage reuses: fit / train_one_epoch / evaluate.

Checkpoints are written atomically after each epoch (``last.pt``, plus ``best.pt`` by
validation top-1) and loaded with ``weights_only=True`` on resume, which continues from the
next epoch with the optimizer, schedule and data order restored.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.errors import BackendUnavailableError, CheckpointError
from deploykit.host import distributed as dist
from deploykit.host.progress import log, make_progress
from deploykit.models import split_outputs
from deploykit.recipe import TrainSpec
from deploykit.runfiles.atomic import save_torch

__all__ = ["Evaluator", "FitResult", "LossFn", "Objective", "evaluate", "fit", "seed_everything",
           "to_device", "train_one_epoch"]

# A loss function returns named terms; "loss" is the one that is minimised. Its inputs and
# targets are what the loader yields: tensors for classifiers, lists of images and of target
# dicts for detectors.
LossFn = Callable[[nn.Module, Any, Any], dict[str, torch.Tensor]]
# An evaluator measures a model on a loader: named metrics, one of which fit() tracks.
Evaluator = Callable[[nn.Module, Iterable, torch.device], dict[str, float]]


@dataclass(frozen=True)
class Objective:
    """What a task trains for: its loss (``None``: cross-entropy with the recipe's label
    smoothing), the evaluator that measures a model on a loader (``None``: :func:`evaluate`,
    top-1 and top-5) and the evaluator's metric (higher is better) that picks the best epoch."""

    loss_fn: LossFn | None = None
    evaluator: Evaluator | None = None
    metric: str = "top1_pct"


def to_device(batch: Any, device: str | torch.device) -> Any:
    """``batch`` with every tensor in it (also inside lists, tuples and dicts) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


_METRIC_NAMES = {"top1_pct": "top-1", "map_pct": "mAP", "map50_pct": "mAP@.5"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cross_entropy_loss(label_smoothing: float = 0.0, aux_weight: float = 0.0) -> LossFn:
    """Cross-entropy on the main logits; a model whose training forward also returns auxiliary
    logits (googlenet, inception_v3) adds ``aux_weight`` times their cross-entropy (torchvision's
    reference scripts use 0.3 for googlenet, 0.4 for inception_v3)."""

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, aux = split_outputs(model(x))
        ce = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if not aux or aux_weight == 0:
            return {"loss": ce}
        aux_ce = sum(F.cross_entropy(a, y, label_smoothing=label_smoothing) for a in aux)
        return {"loss": ce + aux_weight * aux_ce, "ce": ce.detach(), "aux": aux_ce.detach()}

    return loss_fn


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
             device: str | torch.device = "cpu") -> dict[str, float]:
    """Top-1/top-5 accuracy (percent) and mean cross-entropy of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = split_outputs(model(x))[0]
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        total += len(y)
    model.train(was_training)
    if total == 0:
        return {"top1_pct": float("nan"), "top5_pct": float("nan"), "loss": float("nan")}
    return {"top1_pct": 100.0 * correct1 / total, "top5_pct": 100.0 * correct5 / total,
            "loss": loss_sum / total}


def train_one_epoch(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                    loss_fn: LossFn, desc: str = "train", grad_clip: float | None = None,
                    device: str | torch.device = "cpu",
                    after_backward: Callable[[nn.Module], None] | None = None,
                    trainable: nn.Module | None = None, amp: bool = False) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of each loss term.

    ``after_backward(model)`` runs between backward and step (e.g. a sparsity sub-gradient).
    ``trainable``: every module the optimizer updates (default ``model``); its gradients are
    clipped together and, under torchrun, averaged over the processes, each of which trains on
    its slice of the global batch. ``amp``: bfloat16 autocast for CUDA batches.
    """
    trainable = model if trainable is None else trainable
    model.train()
    sums: dict[str, float] = {}
    n = 0
    total = len(loader) if hasattr(loader, "__len__") else None
    with make_progress() as prog:
        task = prog.add_task(desc, total=total, info="")
        for x, y in loader:
            x, y = dist.shard(to_device(x, device), to_device(y, device))
            on_cuda = torch.device(device).type == "cuda"
            with torch.autocast("cuda", torch.bfloat16, enabled=amp and on_cuda):
                terms = loss_fn(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            dist.all_reduce_gradients(trainable)
            if after_backward is not None:
                after_backward(model)
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(trainable.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
            info = " ".join(f"{k}={sums[k] / n:.3f}" for k in sums)
            prog.update(task, advance=1, info=info)
    if n and not math.isfinite(sums["loss"]):
        raise FloatingPointError("training diverged (loss is not finite); lower the learning rate")
    return {k: v / max(n, 1) for k, v in sums.items()}


def resolve_device(spec: TrainSpec) -> torch.device:
    """``auto``: CUDA when available (this process's GPU under torchrun), else the CPU."""
    if spec.device == "cpu" or (spec.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise BackendUnavailableError("train.device is 'cuda' but no CUDA device is available; "
                           "set device: auto or cpu")
    return torch.device("cuda", dist.rank() % torch.cuda.device_count())


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                               nesterov=spec.nesterov and spec.momentum > 0,
                               weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, spec: TrainSpec,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    total = max(spec.epochs * steps_per_epoch, 1)
    if spec.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=total,
                                                   pct_start=0.25)
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return None


@dataclass
class FitResult:
    """What ``fit`` measured: per-epoch history, the best and final validation value of the
    tracked ``metric`` (higher is better: top-1 for classifiers, mAP for detectors), seconds."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: float = float("nan")
    final: float = float("nan")
    metric: str = "top1_pct"
    seconds: float = 0.0
    epochs_run: int = 0


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable, spec: TrainSpec,
        checkpoint_dir: Path | None = None, resume: bool = False, loss_fn: LossFn | None = None,
        desc: str = "train", device: str | torch.device | None = None, keep_best: bool = False,
        after_backward: Callable[[nn.Module], None] | None = None,
        extra_modules: nn.Module | None = None,
        on_epoch_start: Callable[[int], None] | None = None,
        objective: Objective | None = None) -> FitResult:
    """Train ``model`` for ``spec.epochs`` epochs, evaluating after each.

    Args:
        model: trained in place.
        train_loader, val_loader: batches of ``(images, labels)``.
        spec: optimizer, schedule and epochs.
        checkpoint_dir: where ``last.pt`` (and ``best.pt``) go; ``None`` disables checkpoints.
        resume: continue from ``checkpoint_dir/last.pt`` if it exists.
        loss_fn: named loss terms, instead of the objective's (distillation's own loss).
        keep_best: load the best validation weights at the end.
        after_backward: hook between backward and optimizer step.
        extra_modules: trainable modules outside ``model`` (e.g. distillation adapters) that
            share the optimizer and the checkpoint.
        device: where to train (default from ``spec.device``); the model returns to the CPU.
        on_epoch_start: called with the 0-based epoch before it trains (also after a resume),
            e.g. to freeze BatchNorm statistics or quantization ranges after N epochs.
        objective: the task's loss, evaluator and tracked metric (default: classification:
            cross-entropy, :func:`evaluate`, top-1).

    Returns:
        A :class:`FitResult`.

    Raises:
        CheckpointError: a resume checkpoint is corrupt or does not fit.
    """
    objective = objective or Objective()
    metric = objective.metric
    loss_fn = loss_fn or objective.loss_fn or cross_entropy_loss(spec.label_smoothing,
                                                                 spec.aux_weight)
    device = resolve_device(spec) if device is None else torch.device(device)
    trainable = nn.ModuleDict({"model": model}) if extra_modules is None else \
        nn.ModuleDict({"model": model, "extra": extra_modules})
    trainable.to(device)
    optimizer = make_optimizer(trainable, spec)
    steps = len(train_loader) if hasattr(train_loader, "__len__") else 1
    scheduler = make_scheduler(optimizer, spec, steps)
    evaluator = objective.evaluator or evaluate
    result = FitResult(metric=metric)
    start_epoch = 0
    last = checkpoint_dir / "last.pt" if checkpoint_dir else None
    best = checkpoint_dir / "best.pt" if checkpoint_dir else None
    if resume and last is not None and last.is_file():
        try:
            ck = torch.load(last, map_location="cpu", weights_only=True)
            trainable.load_state_dict(ck["trainable"])
            optimizer.load_state_dict(ck["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(ck["scheduler"])
        except Exception as e:
            raise CheckpointError(f"{last}: cannot resume ({type(e).__name__}: {e}); delete "
                                  "the file to start this training over") from None
        start_epoch = int(ck["epoch"]) + 1
        result.history = list(ck.get("history", []))
        result.best = float(ck.get("best", ck.get("best_top1_pct", float("nan"))))
        log(f"{desc}: resuming after epoch {start_epoch} from {last}")
    t0 = time.perf_counter()
    for epoch in range(start_epoch, spec.epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        terms = train_one_epoch(model, train_loader, optimizer, scheduler, loss_fn,
                                f"{desc} {epoch + 1}/{spec.epochs}", spec.grad_clip, device,
                                after_backward, trainable, spec.amp)
        metrics = evaluator(model, val_loader, device)
        value = metrics[metric]
        row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in terms.items()},
               **{f"val_{k}": v for k, v in metrics.items() if k != "top5_pct"}}
        result.history.append(row)
        improved = not (value <= result.best)  # True when best is nan
        if improved:
            result.best = value
        log(f"{desc} epoch {epoch + 1}/{spec.epochs}: loss {terms['loss']:.4f}, "
            f"val {_METRIC_NAMES.get(metric, metric)} {value:.2f}%")
        if checkpoint_dir is not None and dist.is_main():
            if improved and best is not None:
                save_torch({"trainable": trainable.state_dict(), "epoch": epoch}, best)
            save_torch({"trainable": trainable.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler else {},
                        "epoch": epoch, "history": result.history,
                        "best": result.best}, last)
        dist.barrier()
        result.epochs_run += 1
    result.seconds = time.perf_counter() - t0
    if keep_best and best is not None and best.is_file():
        best_state = torch.load(best, map_location="cpu", weights_only=True)["trainable"]
        trainable.load_state_dict(best_state)
    result.final = evaluator(model, val_loader, device)[metric] if spec.epochs else \
        float("nan")
    trainable.to("cpu")  # the pipeline exports and measures from the CPU copy
    return result
