"""Measure every candidate of every task the same way: export -> parity -> scores on each
runtime -> latency, the candidates timed alternately.

The task says what differs (:class:`deploykit.tasks.Task`): its artifact (a classifier's
logits; a detector's end-to-end boxes, with its network alone timed beside it), how parity
compares outputs, its score, and the input latency is timed on. The runtimes come from the
runtime table: every runtime runs every task's artifact (PyTorch runtimes run the module the
task gives in its place), and latency rows are keyed by the runtime's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from deploykit.bench import (
    CpuRows,
    GpuPeak,
    check_parity,
    device_p50_ms,
    find_divergence,
    runner_accuracy,
    time_alternating,
)
from deploykit.data import Loaders
from deploykit.errors import ParityError
from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.models import count_macs_params, file_size_bytes, layer_widths
from deploykit.recipe import BenchSpec, ExportSpec, Recipe, runtime_info
from deploykit.report import CandidateReport, LatencyRecord, metric_label
from deploykit.runtimes import (
    INT8_ON_TORCH_CPU,
    INT8_ON_TORCH_CUDA,
    Runner,
    make_runner,
    make_runners,
)
from deploykit.state import Candidate

__all__ = ["GPU_PARITY_KEYS", "Artifact", "MeasuredTask", "Score", "classifier_artifact",
           "classifier_parity", "measure_candidates", "parity_batches", "top1_top5"]

# why a runtime without INT8 kernels reports no latency for an INT8 candidate
INT8_NOT_APPLICABLE = {"torch-cpu": INT8_ON_TORCH_CPU, "torch-cuda": INT8_ON_TORCH_CUDA}

# the parity figures kept for each GPU runtime beside the CPU ones
GPU_PARITY_KEYS = ("max_abs_error", "top1_agreement", "matched_fraction")

# a task's metrics of an artifact run by a runner on a loader (classification: top-1, top-5)
Score = Callable[[Runner, Iterable], dict[str, float]]


@dataclass
class Artifact:
    """A candidate as its task exports it, with what the measurement needs to run it.

    Attributes:
        path: the ONNX file a user deploys.
        module: what the PyTorch runtimes run in its place: the same input, the same outputs
            (in order; an ``output_names`` attribute names them, as the file's outputs do).
        macs, params: its cost (a detector's: its network and box head, not the NMS).
        inputs: batch size -> the input latency is timed on (the same for every candidate).
        batch_sizes: the batch sizes it takes (``None``: any of the recipe's).
        arch: what the report keeps about its structure.
        network: its network alone (a detector's, between resize and decoding), timed beside
            it where the surrounding pre- and post-processing is worth seeing apart.
    """

    path: Path
    module: nn.Module
    macs: int
    params: int
    inputs: Callable[[int], np.ndarray]
    batch_sizes: tuple[int, ...] | None = None
    arch: dict[str, Any] = field(default_factory=dict)
    network: Artifact | None = None


class MeasuredTask(Protocol):
    """What the measurement asks a task (:class:`deploykit.tasks.Task` has these hooks)."""

    primary_metric: str

    def export(self, candidate: Candidate, loaders: Any, spec: ExportSpec, out_dir: Path,
               seed: int = 0) -> Artifact: ...

    def parity(self, candidate: Candidate, artifact: Artifact, reference: Runner,
               runner: Runner, loaders: Any, spec: ExportSpec, seed: int = 0
               ) -> dict[str, Any]: ...

    def score(self, runner: Runner, loader: Iterable) -> dict[str, float]: ...


def parity_batches(loaders: Loaders, real_batches: int, seed: int = 0) -> list[np.ndarray]:
    """A random batch plus the first ``real_batches`` validation batches, as float32 arrays."""
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randn(8, *loaders.input_shape, generator=gen).numpy()]
    for i, (x, _) in enumerate(loaders.val):
        if i >= real_batches:
            break
        batches.append(x.numpy().astype(np.float32))
    return batches


def top1_top5(runner: Runner, loader: Iterable) -> dict[str, float]:
    """A classifier artifact's top-1 and top-5 (%) on ``loader``: classification's score."""
    acc = runner_accuracy(runner, loader)
    return {"top1_pct": acc["top1_pct"], "top5_pct": acc["top5_pct"]}


def _locate(cand: Candidate, path: Path, x: np.ndarray, tolerance: float,
            runtime: str = "onnxruntime-cpu") -> str:
    """Name the first layer whose exported output on ``runtime`` departs from PyTorch's."""
    try:
        div = find_divergence(cand.model, path, x, tolerance=min(tolerance, 1e-2),
                              runtime=runtime, precision=cand.precision)
    except Exception as e:  # the search is a diagnosis; never hide the parity error behind it
        return f"(could not compare layer outputs: {type(e).__name__}: {e})"
    return str(div) if div else "(every module output matched; the difference is in the head)"


def _tolerance(limits: dict[str, float | None]) -> float:
    """The per-layer tolerance of the divergence search for these parity limits."""
    return limits["max_abs_error"] or limits["max_error_vs_range"] or 1e-3


def classifier_artifact(cand: Candidate, input_shape: tuple[int, int, int], spec: ExportSpec,
                        out_dir: Path, seed: int = 0) -> Artifact:
    """A classifier-shaped candidate (one batch in, one tensor out) exported to
    ``out_dir/<name>.onnx``; timed on random batches of any size."""
    path = out_dir / f"{cand.name}.onnx"
    export_onnx(cand.model, input_shape, path, spec.onnx.opset, spec.onnx.dynamic_batch)
    macs, params = count_macs_params(cand.model, input_shape)

    def inputs(batch: int) -> np.ndarray:
        gen = torch.Generator().manual_seed(seed + 7 + batch)
        return torch.randn(batch, *input_shape, generator=gen).numpy()

    return Artifact(path, cand.model, macs, params, inputs,
                    arch={"widths": layer_widths(cand.model), **cand.arch})


def classifier_parity(cand: Candidate, art: Artifact, reference: Runner, runner: Runner,
                      loaders: Loaders, spec: ExportSpec, seed: int = 0) -> dict[str, Any]:
    """Outputs compared element-wise (and top-1 agreement) on a random batch and the first
    validation batches; on a failure, the first layer whose exported output departs is named.

    Raises:
        ParityError: past ``spec.onnx.parity``'s limits for the runner's precision.
    """
    limits = spec.onnx.parity.thresholds(runner.precision)
    checks = parity_batches(loaders, spec.onnx.parity.real_batches, seed)
    on = "" if runner.name == "onnxruntime-cpu" else f" on {runner.name} ({runner.setup})"
    try:
        parity = check_parity(reference, runner, checks, what=f"{art.path}{on}", **limits)
    except ParityError as e:
        where = (_locate(cand, art.path, checks[0], _tolerance(limits), runner.name)
                 if runner.name != "torch-cuda" else
                 "(torch-cuda runs the PyTorch model itself: no exported tensors)")
        raise ParityError(f"{e}\n{where}") from None
    if runner.name == "onnxruntime-cpu" and \
            (parity.noise_floor_vs_range or 0.0) > (limits["max_error_vs_range"] or 0.0):
        log(f"[{cand.name}] warning: rounding alone moves this INT8 model's logits by "
            f"{parity.noise_floor_vs_range:.2g} of their range (inputs moved far below one "
            "quantization step): its quantization noise compounds, parity cannot tell an "
            "export error from rounding, and its accuracy against the float model is the "
            "measure; consider QAT or quantize.keep_float")
    return parity.to_dict()


def _runners(module: Any, path: Path, precision: str, bench: BenchSpec, rep: CandidateReport
             ) -> dict[tuple[str, str], Runner]:
    """The CPU reference and ONNX Runtime CPU runners (always: parity needs them) and one per
    set-up of every other runtime the recipe times."""
    # PyTorch runs an INT8 candidate as its fake-quant simulation: say so in the report
    torch_precision = "int8-simulated" if precision == "int8" else precision
    runners = {}
    for rt, prec in (("torch-cpu", torch_precision), ("onnxruntime-cpu", precision)):
        r = make_runner(rt, module, path, bench.threads, prec)
        runners[(rt, r.setup)] = r
    for rt in bench.runtimes:
        if rt in ("torch-cpu", "onnxruntime-cpu"):
            continue
        made = make_runners(rt, module, path, bench.threads, precision,
                            max(bench.batch_sizes), bench.gpu)
        if not made and rep.not_timed.get(rt) is None:
            rep.not_timed[rt] = INT8_ON_TORCH_CUDA
            log(f"[{rep.name}] {rt}: {INT8_ON_TORCH_CUDA}")
        for runner in made:   # GPU runtimes: built only when asked for, one per set-up
            runners[(rt, runner.setup)] = runner
    return runners


def _timed(runners: dict[tuple[str, str], Runner], bench: BenchSpec, precision: str,
           rep: CandidateReport) -> dict[tuple[str, str], Runner]:
    """The runners whose latency is reported: the recipe's runtimes, less those that run an
    INT8 candidate as its fake-quant simulation (runtime table: ``int8_native`` false), whose
    time is no INT8 latency: "not applicable"."""
    out = {}
    for (rt, setup), r in runners.items():
        if rt not in bench.runtimes:
            continue
        if precision == "int8" and not runtime_info(rt).int8_native:
            if rep.not_timed.get(rt) is None:
                rep.not_timed[rt] = INT8_NOT_APPLICABLE.get(rt, INT8_ON_TORCH_CPU)
            continue
        out[(rt, setup)] = r
    return out


def measure_candidates(candidates: list[Candidate], loaders: Any, recipe: Recipe, out_dir: Path,
                       task: MeasuredTask) -> list[CandidateReport]:
    """Export, check, score and time each candidate (see the module notes).

    Raises:
        ExportError: a candidate cannot be exported.
        ParityError: an exported candidate disagrees with its PyTorch model.
    """
    bench, export, seed = recipe.bench, recipe.export, recipe.seed
    metric = task.primary_metric
    torch.set_num_threads(bench.threads)
    reports: list[CandidateReport] = []
    arts: dict[str, Artifact] = {}
    timed: dict[str, dict[tuple[str, str], Runner]] = {}
    timed_net: dict[str, dict[tuple[str, str], Runner]] = {}
    for cand in candidates:
        log(f"[{cand.name}] exporting under {out_dir}")
        art = task.export(cand, loaders, export, out_dir, seed)
        cand.onnx_path = art.path
        arts[cand.name] = art
        rep = CandidateReport(cand.name, cand.precision, art.macs, art.params,
                              str(art.path.relative_to(out_dir)), file_size_bytes(art.path),
                              keep_float=list(cand.keep_float), arch=art.arch)
        runners = _runners(art.module, art.path, cand.precision, bench, rep)
        ref = runners[next(k for k in runners if k[0] == "torch-cpu")]
        cpu = runners[next(k for k in runners if k[0] == "onnxruntime-cpu")]
        rep.parity = task.parity(cand, art, ref, cpu, loaders, export, seed)
        for (rt, setup), runner in runners.items():   # every other runtime, same reference
            if rt in ("torch-cpu", "onnxruntime-cpu"):
                continue
            res = task.parity(cand, art, ref, runner, loaders, export, seed)
            for k in GPU_PARITY_KEYS:
                if k in res:
                    rep.parity[f"{rt} ({setup})_{k}"] = res[k]
        if bench.accuracy:
            scored = {"torch-cpu", "onnxruntime-cpu", *bench.runtimes}
            for rt in dict.fromkeys(k for k, _ in runners):   # a runtime's first set-up
                if rt not in scored:
                    continue
                runner = next(r for (k, _), r in runners.items() if k == rt)
                for name, value in task.score(runner, loaders.val).items():
                    rep.metrics.setdefault(name, {})[rt] = value
            values = ", ".join(f"{k} {v:.2f}" for k, v in rep.metrics.get(metric, {}).items())
            log(f"[{cand.name}] {metric_label(metric)}: {values}")
        timed[cand.name] = _timed(runners, bench, cand.precision, rep)
        if art.network is not None:
            net = art.network
            timed_net[cand.name] = _timed(_runners(net.module, net.path, cand.precision, bench,
                                                   rep), bench, cand.precision, rep)
        reports.append(rep)
    if bench.iterations:
        _add_latency(reports, timed, arts, bench, "latency")
        _add_latency(reports, timed_net, {n: a.network for n, a in arts.items()
                                          if a.network is not None}, bench, "network_latency")
    base = reports[0].artifact(metric) if reports else None
    for rep in reports:
        value = rep.artifact(metric)
        if base is not None and value is not None:
            rep.delta_pts[metric] = value - base
    return reports


def _add_latency(reports: list[CandidateReport],
                 runners: dict[str, dict[tuple[str, str], Runner]],
                 arts: dict[str, Artifact], bench: BenchSpec, field: str) -> None:
    """Time every (runtime, set-up) at every batch size the artifacts take, the candidates
    that run it alternately, into each report's ``field``; GPU rows also get memory, TFLOP/s
    and the fraction of the GPU's peak."""
    by_name = {r.name: r for r in reports}
    slots = list(dict.fromkeys(key for rs in runners.values() for key in rs))
    gpu_peak, cpu_rows = GpuPeak(bench.gpu.device), CpuRows()
    for rt, setup in slots:
        for batch in bench.batch_sizes:
            timed = {name: rs[(rt, setup)] for name, rs in runners.items() if (rt, setup) in rs
                     and (arts[name].batch_sizes is None or batch in arts[name].batch_sizes)}
            if not timed:
                continue
            inputs = {name: arts[name].inputs(batch) for name in timed}
            fns = {name: (lambda r=r, x=inputs[name]: r(x)) for name, r in timed.items()}
            what = "network " if field == "network_latency" else ""
            log(f"timing {what}{rt} ({setup}) batch {batch}: {len(fns)} candidate(s), "
                f"{bench.iterations} runs each")
            memory = {name: r.peak_memory_mb(inputs[name]) for name, r in timed.items()
                      if hasattr(r, "peak_memory_mb")}
            stats = time_alternating(fns, batch, bench.iterations, bench.warmup,
                                     target_rel_ci=bench.target_rel_ci,
                                     max_iterations=bench.max_iterations,
                                     budget_s=bench.time_budget_s)
            base = stats.get(reports[0].name)
            for name, st in stats.items():
                r = timed[name]
                rec = LatencyRecord.from_stats(
                    st, runtime=r.runtime, device=r.device, precision=r.precision,
                    threads=r.threads, setup=setup, name=r.name,
                    speedup_vs_baseline=(base.p50_ms / st.p50_ms
                                         if base is not None and st.p50_ms > 0 else None),
                    device_p50_ms=device_p50_ms(r, inputs[name], bench.iterations,
                                                bench.warmup),
                    peak_memory_mb=memory.get(name))
                if r.device == "cuda":
                    gpu_peak.fill(rec, by_name[name].macs)
                elif r.device == "cpu":
                    cpu_rows.fill(rec, by_name[name].macs)
                getattr(by_name[name], field).append(rec)
