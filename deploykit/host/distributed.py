"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, nccl on GPU).

Every process runs the same pipeline on the same seed; the training loop gives each rank a
disjoint slice of every global batch and averages gradients with an all-reduce before each
optimizer step, so the weights stay identical on every rank (BatchNorm statistics are per rank,
as in ``DistributedDataParallel`` without SyncBatchNorm). Only rank 0 writes checkpoints,
ONNX files and reports. Nothing here runs at import time.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["all_reduce_gradients", "barrier", "broadcast_object", "init_from_env", "is_main",
           "rank", "shard", "world_size"]

T = TypeVar("T")


def init_from_env() -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); return whether one is
    active. The backend is nccl when CUDA is available, else gloo."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return True


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (e.g. the run folder, whose name has a timestamp)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(x: Any, y: Any) -> tuple[Any, Any]:
    """This rank's slice of a global batch (every ``world_size``-th sample from ``rank``):
    tensors, or lists of images and targets."""
    n = world_size()
    if n == 1:
        return x, y
    if len(x) % n:
        raise ValueError(f"batch of {len(x)} does not split over {n} processes; use a "
                         "data.batch_size divisible by the number of processes")
    return x[rank()::n], y[rank()::n]


def all_reduce_gradients(module: nn.Module) -> None:
    """Average every parameter's gradient over the ranks (flattened into one all-reduce)."""
    n = world_size()
    if n == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= n
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
