"""Measure every candidate the same way: export -> parity -> accuracy -> alternating latency."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from deploykit.bench import (
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
from deploykit.recipe import BenchSpec, ExportSpec
from deploykit.report import CandidateReport, LatencyRecord, metric_label
from deploykit.runtimes import INT8_ON_TORCH_CUDA, Runner, make_runner, make_runners
from deploykit.state import Candidate

__all__ = ["Score", "measure_candidates", "parity_batches", "top1_top5"]

# a task's metrics of an artifact run by a runner on a loader (classification: top-1, top-5)
Score = Callable[[Runner, Iterable], dict[str, float]]


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


def measure_candidates(candidates: list[Candidate], loaders: Loaders, export: ExportSpec,
                       bench: BenchSpec, out_dir: Path, seed: int = 0,
                       score: Score | None = None, metric: str = "top1_pct"
                       ) -> list[CandidateReport]:
    """Export, check, and measure each candidate; latency is timed alternately across them.

    ``score`` gives the task's metrics of an artifact on a runtime (percentages by name, e.g.
    top-1 and top-5), ``metric`` the one each candidate's change over the baseline is
    reported on.

    Raises:
        ParityError: an exported candidate disagrees with its PyTorch model.
    """
    torch.set_num_threads(bench.threads)
    score = score or top1_top5
    onnx_spec = export.onnx
    checks = parity_batches(loaders, onnx_spec.parity.real_batches, seed)
    reports: list[CandidateReport] = []
    runners: dict[str, dict[str, Runner]] = {}
    for cand in candidates:
        path = out_dir / f"{cand.name}.onnx"
        log(f"[{cand.name}] exporting to {path}")
        export_onnx(cand.model, loaders.input_shape, path, onnx_spec.opset, onnx_spec.dynamic_batch)
        cand.onnx_path = path
        macs, params = count_macs_params(cand.model, loaders.input_shape)
        rep = CandidateReport(cand.name, cand.precision, macs, params, path.name,
                              file_size_bytes(path), keep_float=list(cand.keep_float),
                              arch={"widths": layer_widths(cand.model), **cand.arch})
        # PyTorch runs an INT8 candidate as its fake-quant simulation: say so in the report
        torch_precision = "int8-simulated" if cand.precision == "int8" else cand.precision
        cpu_ref = make_runner("torch-cpu", cand.model, path, bench.threads, torch_precision)
        cpu_ort = make_runner("onnxruntime-cpu", cand.model, path, bench.threads,
                              cand.precision)
        cand_runners = {(rt, r.setup): r for rt, r in (("torch-cpu", cpu_ref),
                                                       ("onnxruntime-cpu", cpu_ort))}
        for rt in bench.runtimes:
            if rt in ("torch-cpu", "onnxruntime-cpu"):
                continue
            made = make_runners(rt, cand.model, path, bench.threads, cand.precision,
                                max(bench.batch_sizes), bench.gpu)
            if not made:
                rep.not_timed[rt] = INT8_ON_TORCH_CUDA
                log(f"[{cand.name}] {rt}: {INT8_ON_TORCH_CUDA}")
            for runner in made:   # GPU runtimes: built only when asked for, one per set-up
                cand_runners[(rt, runner.setup)] = runner
        limits = onnx_spec.parity.thresholds(cand.precision)
        try:
            parity = check_parity(cpu_ref, cpu_ort, checks, what=str(path), **limits)
        except ParityError as e:
            raise ParityError(f"{e}\n{_locate(cand, path, checks[0], _tolerance(limits))}"
                              ) from None
        rep.parity = parity.to_dict()
        if (parity.noise_floor_vs_range or 0.0) > (limits["max_error_vs_range"] or 0.0):
            log(f"[{cand.name}] warning: rounding alone moves this INT8 model's logits by "
                f"{parity.noise_floor_vs_range:.2g} of their range (inputs moved far below one "
                "quantization step): its quantization noise compounds, parity cannot tell an "
                "export error from rounding, and its accuracy against the float model is the "
                "measure; consider QAT or quantize.keep_float")
        for (rt, setup), runner in cand_runners.items():   # the GPU ways, same reference
            if rt in ("torch-cpu", "onnxruntime-cpu"):
                continue
            gpu_limits = onnx_spec.parity.thresholds(runner.precision)
            label = f"{rt} ({setup})"
            try:
                res = check_parity(cpu_ref, runner, checks, what=f"{path} on {label}",
                                   **gpu_limits)
            except ParityError as e:
                where = (_locate(cand, path, checks[0], _tolerance(gpu_limits), rt)
                         if rt != "torch-cuda" else
                         "(torch-cuda runs the PyTorch model itself: no exported tensors)")
                raise ParityError(f"{e}\n{where}") from None
            rep.parity[f"{label}_max_abs_error"] = res.max_abs_error
            rep.parity[f"{label}_top1_agreement"] = res.top1_agreement
        timed = {key: r for key, r in cand_runners.items() if key[0] in bench.runtimes}
        if bench.accuracy:
            for rt in bench.runtimes:   # a runtime's first set-up (torch-cuda: 1st precision)
                runner = next((r for (k, _), r in timed.items() if k == rt), None)
                if runner is None:
                    continue
                for name, value in score(runner, loaders.val).items():
                    rep.metrics.setdefault(name, {})[rt] = value
            accs = ", ".join(f"{k} {v:.2f}%" for k, v in rep.metrics.get(metric, {}).items())
            log(f"[{cand.name}] {metric_label(metric)} {accs}")
        runners[cand.name] = timed
        reports.append(rep)
    _add_latency(reports, runners, loaders.input_shape, bench, seed)
    base = reports[0].artifact(metric) if reports else None
    for rep in reports:
        value = rep.artifact(metric)
        if base is not None and value is not None:
            rep.delta_pts[metric] = value - base
    return reports


def _add_latency(reports: list[CandidateReport],
                 runners: dict[str, dict[tuple[str, str], Runner]],
                 input_shape: tuple[int, int, int], bench: BenchSpec, seed: int) -> None:
    """Time every (runtime, set-up) at every batch size, the candidates that run it
    alternately; GPU rows also get memory, TFLOP/s and the fraction of the GPU's peak."""
    by_name = {r.name: r for r in reports}
    gen = torch.Generator().manual_seed(seed + 7)
    slots = list(dict.fromkeys(key for rs in runners.values() for key in rs))
    gpu_peak = GpuPeak(bench.gpu.device)
    for rt, setup in slots:
        for batch in bench.batch_sizes:
            x = torch.randn(batch, *input_shape, generator=gen).numpy()
            timed = {name: rs[(rt, setup)] for name, rs in runners.items() if (rt, setup) in rs}
            fns = {name: (lambda r=r, x=x: r(x)) for name, r in timed.items()}
            log(f"timing {rt} ({setup}) batch {batch}: {len(fns)} candidate(s), "
                f"{bench.iterations} runs each")
            memory = {name: r.peak_memory_mb(x) for name, r in timed.items()
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
                    device_p50_ms=device_p50_ms(r, x, bench.iterations, bench.warmup),
                    peak_memory_mb=memory.get(name))
                if r.device == "cuda":
                    gpu_peak.fill(rec, by_name[name].macs)
                by_name[name].latency.append(rec)
