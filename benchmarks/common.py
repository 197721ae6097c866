"""Shared pieces of the benchmark scripts (not part of the package): R20 data and baseline.

The R20 protocol: CIFAR-10 image folder, ResNet-20, 15 epochs SGD nesterov, wd 5e-4, batch
128, one-cycle to 0.2; recovery budget 5 epochs. The decoded data set and the trained baseline
are cached under benchmarks/results/cache/ (git-ignored) so several scripts can share them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from deploykit.bench import time_onnx_files
from deploykit.data import build_loaders
from deploykit.models import build_model, load_checkpoint, make_checkpoint
from deploykit.recipe import DataSpec, ModelSpec, TrainSpec
from deploykit.runfiles.atomic import save_torch, write_text
from deploykit.train import evaluate, fit, seed_everything

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / "results" / "cache"
CIFAR = ROOT.parent.parent / "shared" / "data" / "cifar10"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
BASELINE_TRAIN = TrainSpec(epochs=15, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
                           weight_decay=5e-4, schedule="onecycle")
RECOVERY_TRAIN = TrainSpec(epochs=5, optimizer="sgd", lr=0.01, momentum=0.9, nesterov=True,
                           weight_decay=5e-4, schedule="cosine")


def cifar_loaders(seed: int = 0):
    if not CIFAR.is_dir():
        raise SystemExit(f"CIFAR-10 not found at {CIFAR}; these benchmarks need ../shared/data")
    spec = DataSpec(kind="imagefolder", root=CIFAR, image_size=32, batch_size=128,
                    mean=CIFAR_MEAN, std=CIFAR_STD, calib_samples=1024)
    return build_loaders(spec, seed, num_classes=10)


def r20_baseline_path(seed: int = 0) -> Path:
    """The cached R20 baseline trained with ``seed`` (0: the one every table uses)."""
    return CACHE / ("r20_baseline.pt" if seed == 0 else f"r20_baseline_seed{seed}.pt")


def r20_baseline(loaders, log, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """Train (or load the cached) R20 float baseline; ``loaders`` should be seeded alike."""
    path = r20_baseline_path(seed)
    model = build_model(ModelSpec(name="resnet20"))
    if path.is_file():
        ck = load_checkpoint(path)
        model.load_state_dict(ck["state_dict"])
        return model, ck["meta"]
    seed_everything(seed)
    res = fit(model, loaders.train, loaders.val, BASELINE_TRAIN, CACHE / f"{path.stem}_ck",
              resume=True, desc=f"R20 baseline (seed {seed})")
    meta = {"top1_pct": res.final, "seconds": res.seconds,
            "seconds_per_epoch": res.seconds / max(res.epochs_run, 1)}
    save_torch(make_checkpoint(model, meta=meta), path)
    log(f"baseline: {meta}")
    return model, meta


def ort_latency(paths: dict[str, Path], shape, batches=(1, 64), threads=2, iterations=60):
    """p50 ms per candidate and batch, timed alternately in one process (ORT CPU EP)."""
    return time_onnx_files(paths, shape, list(batches), threads, iterations, warmup=10,
                           rounds=6)


def time_runner_pairs(runners: dict, shape: tuple[int, int, int], batches: list[int],
                      iterations: int = 40, rounds: int = 5, what: str = "") -> dict:
    """Every runner (keyed by anything: a (file, runtime) pair) timed alternately in this
    process on one random batch per batch size; key -> batch -> LatencyStats."""
    import numpy as np

    from deploykit.bench import time_alternating
    from deploykit.host.progress import log

    out: dict = {k: {} for k in runners}
    for b in batches:
        x = np.random.default_rng(b).standard_normal((b, *shape), dtype=np.float32)
        log(f"{what}timing {len(runners)} (file, runtime) pairs at batch {b}")
        stats = time_alternating({k: (lambda r=r, x=x: r(x)) for k, r in runners.items()}, b,
                                 iterations=iterations, warmup=5, rounds=rounds)
        for k, st in stats.items():
            out[k][b] = st
    return out


def top1(model, loaders) -> float:
    return evaluate(model, loaders.val)["top1_pct"]


def save_results(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M")


def r20_setup(out: Path, log, seed: int = 0) -> tuple:
    """Loaders (shuffled and augmented with ``seed``), the R20 baseline, and the results dict
    of ``out`` (kept rows, fresh baseline)."""
    from deploykit.models import count_macs_params

    torch.set_num_threads(2)
    loaders = cifar_loaders(seed)
    base, meta = r20_baseline(loaders, log)
    base_macs, base_params = count_macs_params(base, (3, 32, 32))
    results = json.loads(out.read_text()) if out.is_file() else {
        "machine": "2-core x86_64 CPU (project machine)", "rows": []}
    results.update(date=stamp(), baseline={"top1_pct": top1(base, loaders), "macs": base_macs,
                                           "params": base_params, **meta})
    return loaders, base, results


def holdout_split(loaders, n: int, seed: int = 0):
    """``loaders`` with ``n`` training images (a seeded choice) moved out of training and used
    as the validation set instead of the test images: for choosing settings without looking at
    the test set. The teacher was trained on all 50,000 images, held-out ones included."""
    import dataclasses

    from deploykit.data import TensorLoader

    tr = loaders.train
    order = torch.randperm(tr.num_samples, generator=torch.Generator().manual_seed(seed))
    keep, held = order[n:], order[:n]
    mean, std = loaders.mean, loaders.std
    train = TensorLoader(tr.images[keep], tr.labels[keep], tr.batch_size, mean, std,
                         shuffle=True, pad=tr.pad, flip=tr.flip, drop_last=tr.drop_last,
                         seed=tr.seed)
    val = TensorLoader(tr.images[held], tr.labels[held], loaders.val.batch_size, mean, std)
    return dataclasses.replace(loaders, train=train, val=val)


def prune_l1(base: torch.nn.Module, macs_ratio: float, base_macs: int, round_to: int = 8
             ) -> torch.nn.Module:
    """A copy of ``base`` L1-pruned (classifier kept) to ``macs_ratio`` of its MACs."""
    import copy

    from deploykit.prune import prune_to_macs
    from deploykit.recipe import PruneSpec

    spec = PruneSpec(importance="l1", target={"macs_ratio": macs_ratio}, round_to=round_to)
    pruned, _, _ = prune_to_macs(copy.deepcopy(base), (3, 32, 32), spec, ["fc"],
                                 int(base_macs * macs_ratio), 0.02 * base_macs)
    return pruned


def distill_recover(base: torch.nn.Module, base_top1: float, student: torch.nn.Module,
                    student_top1: float, loaders, spec, workdir: str = "distill"
                    ) -> tuple[torch.nn.Module, dict]:
    """Recover ``student`` through the distill stage itself, ``base`` (R20) teaching; returns
    the recovered model and the stage's metrics."""
    from deploykit.recipe import Recipe
    from deploykit.stages import distill as distill_stage
    from deploykit.state import Candidate, PipelineState

    state = PipelineState.start(base, ("conv1", "fc"), (3, 32, 32), CACHE / workdir, False,
                                base_top1)
    state.recipe = Recipe.model_validate(   # builds checkpoint teachers
        {"model": {"source": "builtin", "name": "resnet20", "num_classes": 10},
         "data": {"kind": "synthetic", "image_size": 32}})
    state.add_candidate(Candidate("student", student, torch_top1_pct=student_top1))
    state = distill_stage.run(state, loaders, spec)
    return state.candidates[-1].model.eval(), state.history[-1].metrics
