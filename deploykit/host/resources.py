"""Memory: what a run may use, whether the model can fit before any training, and a watchdog
that stops a run which grows past its limit with an error instead of the kernel's
out-of-memory killer.

The limit is ``resources.max_memory_gb``, or by default 90% of what the process could reach
when the run starts (its resident memory plus the memory the system reports available).
"""

from __future__ import annotations

import _thread
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deploykit.errors import ResourceError
from deploykit.recipe import Recipe

__all__ = ["MemoryMeter", "check_fits", "memory_limit_gb", "memory_watchdog", "rss_gb",
           "training_memory_gb"]

_GB = 2**30


def _meminfo_kb(path: str, key: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_gb() -> float:
    """This process's resident memory, GiB (0 where /proc is not available)."""
    kb = _meminfo_kb("/proc/self/status", "VmRSS:")
    return 0.0 if kb is None else kb / 2**20


def memory_limit_gb(recipe: Recipe) -> float | None:
    """``resources.max_memory_gb``, else 90% of (resident + available) memory; None where the
    system does not say (no /proc/meminfo).

    Raises:
        ResourceError: the recipe's limit is below what this process already holds.
    """
    limit = recipe.resources.max_memory_gb
    if limit is not None:
        if limit <= rss_gb():
            raise ResourceError(
                f"resources.max_memory_gb ({limit:g} GiB) is below what this process already "
                f"holds ({rss_gb():.2f} GiB, mostly PyTorch itself): raise it")
        return limit
    avail = _meminfo_kb("/proc/meminfo", "MemAvailable:")
    return None if avail is None else 0.9 * (rss_gb() + avail / 2**20)


def training_memory_gb(model: nn.Module, shape: tuple[int, int, int], batch_size: int,
                       optimizer: str, copies: int = 2) -> dict[str, float]:
    """A lower bound of what training ``model`` takes, GiB, by part: the weights, their
    gradients and optimizer state, ``copies`` more copies of the weights (a compression
    stage holds the baseline candidate and its working copy), and the activations a batch
    keeps for the backward pass (the outputs of every leaf module, measured by one
    eval-mode forward at batch 1)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / _GB
    acts = [0]

    def count(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            acts[0] += out.numel() * out.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    states = 2 if optimizer == "adamw" else 1
    return {"weights": weights, "gradients and optimizer state": weights * (1 + states),
            "model copies": copies * weights, "activations": acts[0] * batch_size / _GB}


def check_fits(model: nn.Module, recipe: Recipe, limit_gb: float | None) -> None:
    """Refuse, before any training, a run whose lower-bound memory (:func:`training_memory_gb`
    plus what the process holds now) passes ``limit_gb``.

    Raises:
        ResourceError: naming the parts, the limit and what to change.
    """
    if limit_gb is None:
        return
    shape = (3, recipe.data.image_size, recipe.data.image_size)
    optimizer = recipe.train.optimizer if recipe.train is not None else "sgd"
    parts = training_memory_gb(model, shape, recipe.data.batch_size, optimizer,
                               copies=2 if recipe.stages else 0)
    need = rss_gb() + sum(parts.values())
    if need > limit_gb:
        detail = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
        raise ResourceError(
            f"resources: {type(model).__name__} at {shape[1]}x{shape[2]}, batch "
            f"{recipe.data.batch_size}, needs at least {need:.1f} GiB ({detail}, and "
            f"{rss_gb():.1f} already in use), over the limit of {limit_gb:.1f} GiB. Fix: lower "
            "data.batch_size or data.image_size, use a smaller model, or run on a machine "
            "with more memory (resources.max_memory_gb sets the limit)")


@dataclass
class MemoryMeter:
    """What the watchdog saw: the peak resident memory (GiB) of the current part of the run
    (``what``, e.g. ``stage prune``) since :meth:`start`."""

    what: str = "the run"
    peak_gb: float = 0.0

    def start(self, what: str) -> None:
        """Begin a new part: name it (for the error) and reset its peak."""
        self.what, self.peak_gb = what, rss_gb()

    def sample(self) -> float:
        now = rss_gb()
        self.peak_gb = max(self.peak_gb, now)
        return now


def _interrupt(thread_id: int) -> None:
    """Raise KeyboardInterrupt in thread ``thread_id`` at its next Python instruction. Unlike
    ``_thread.interrupt_main`` this does not go through the SIGINT handler, which a native
    library may have replaced or set to ignore (the interrupt is then dropped)."""
    import ctypes

    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                                      ctypes.py_object(KeyboardInterrupt))
    if done != 1 and thread_id == threading.main_thread().ident:   # not CPython's API
        _thread.interrupt_main()


@contextlib.contextmanager
def memory_watchdog(limit_gb: float | None, interval_s: float = 0.5, model: str = "the model"
                    ) -> Iterator[MemoryMeter]:
    """Poll this process's resident memory into the yielded :class:`MemoryMeter`; past
    ``limit_gb`` (None: never), interrupt the thread running the block and raise
    :class:`ResourceError` from it, naming the part of the run and ``model``. Artifacts are written
    atomically, so a stopped run leaves no half-written file."""
    meter = MemoryMeter(peak_gb=rss_gb())
    stop, tripped = threading.Event(), []
    target = threading.get_ident()   # the thread running the block

    def watch() -> None:
        while not stop.wait(interval_s):
            now = meter.sample()
            if limit_gb is not None and now > limit_gb:
                tripped.append(now)
                _interrupt(target)
                return

    thread = threading.Thread(target=watch, name="deploykit-memory", daemon=True)
    thread.start()
    handled = False
    try:
        yield meter
    except KeyboardInterrupt:
        if not tripped:
            raise
        handled = True
        raise ResourceError(
            f"resources: {meter.what} of {model} reached {tripped[0]:.1f} GiB of resident "
            f"memory, over the run's limit of {limit_gb:.1f} GiB, and was stopped before the "
            "system ran out. Fix: lower data.batch_size or data.image_size (or this stage's "
            "own sizes), or raise resources.max_memory_gb on a machine with more "
            "memory") from None
    finally:
        stop.set()
        thread.join()
        if tripped and not handled:   # tripped as the block ended: drop the pending interrupt
            import ctypes

            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), None)
