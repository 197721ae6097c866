"""Measurement: latency (warm-up, alternating timing, percentiles), parity, accuracy through any
runner, the first diverging layer, the environment, a latency probe
(``LatencyProbe``), and the references that make latencies from different runs comparable
(re-timing, a yardstick).
May use ``export`` and ``runtimes``; never the reverse."""

from deploykit.bench.accuracy import runner_accuracy
from deploykit.bench.cpu_rows import CpuRows
from deploykit.bench.divergence import Divergence, find_divergence, module_outputs
from deploykit.bench.env import cpu_int8_features, environment
from deploykit.bench.gpu_rows import GpuPeak, tflops
from deploykit.bench.latency import (
    LatencyStats,
    device_p50_ms,
    median_ci,
    summarize,
    time_alternating,
)
from deploykit.bench.onnx_file import FileBench, bench_onnx_file
from deploykit.bench.parity import ParityResult, check_parity, compare_outputs
from deploykit.bench.probe import LatencyProbe, time_onnx_files
from deploykit.bench.reference import retime_pair, yardstick_ms

__all__ = [
    "CpuRows",
    "Divergence",
    "FileBench",
    "GpuPeak",
    "LatencyProbe",
    "LatencyStats",
    "ParityResult",
    "bench_onnx_file",
    "check_parity",
    "compare_outputs",
    "cpu_int8_features",
    "device_p50_ms",
    "environment",
    "find_divergence",
    "median_ci",
    "module_outputs",
    "retime_pair",
    "runner_accuracy",
    "summarize",
    "tflops",
    "time_alternating",
    "time_onnx_files",
    "yardstick_ms",
]
