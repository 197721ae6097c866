from __future__ import annotations

import json

import pytest

from deploykit.report import SCHEMA_VERSION, CandidateReport, LatencyRecord, Report


def _report() -> Report:
    lat = LatencyRecord(runtime="onnxruntime", device="cpu", precision="fp32", batch=1, threads=2,
                        iterations=50, p50_ms=1.0, p90_ms=1.2, p99_ms=1.5, mean_ms=1.05,
                        std_ms=0.1, min_ms=0.9, max_ms=1.6, throughput_ips=1000.0,
                        speedup_vs_baseline=1.0)
    base = CandidateReport("baseline", "fp32", 41_000_000, 270_000, "baseline.onnx", 1_100_000,
                           {"top1_pct": {"onnxruntime-cpu": 91.5, "torch-cpu": 91.5}},
                           {"top1_pct": 0.0}, {"max_abs_error": 1e-6}, [lat])
    small = CandidateReport("prune", "fp32", 20_000_000, 130_000, "prune.onnx", 550_000,
                            {"top1_pct": {"onnxruntime-cpu": 90.0}}, {"top1_pct": -1.5}, {}, [])
    return Report("r", "ab" * 32, 0, "2026-11-23 00:00:00", {"cpu_model": "x", "packages": {}},
                  candidates=[base, small])


def test_json_roundtrip_is_exact():
    r = _report()
    back = Report.from_json(r.to_json())
    assert back == r
    assert json.loads(r.to_json())["schema_version"] == SCHEMA_VERSION
    assert back.candidate("prune").artifact_top1_pct() == 90.0


def test_unit_suffixed_keys():
    d = json.loads(_report().to_json())
    lat = d["candidates"][0]["latency"][0]
    assert {"p50_ms", "p90_ms", "p99_ms", "throughput_ips"} <= set(lat)
    assert "onnx_size_bytes" in d["candidates"][0]


def test_markdown_has_every_candidate_and_latency_row():
    md = _report().to_markdown()
    assert "| baseline | fp32 | 41.00 | 0.270 | 1.100 |" in md
    assert "| prune |" in md and "-1.50" in md
    assert "| baseline | onnxruntime-cpu | fp32, 2 threads | 1 | 1.000 |" in md


def test_wrong_schema_version_is_rejected():
    d = _report().to_dict()
    d["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version"):
        Report.from_dict(d)


def test_gpu_device_time_gets_its_own_column_only_when_measured():
    import dataclasses

    import numpy as np

    from deploykit.bench import device_p50_ms

    assert "device p50" not in _report().to_markdown()   # CPU only: no empty column
    r = _report()
    cuda = dataclasses.replace(r.candidates[0].latency[0], runtime="torch", device="cuda",
                               device_p50_ms=0.42)
    r.candidates[0].latency.append(cuda)
    md = r.to_markdown()
    assert "device p50" in md and "| 0.420 |" in md
    assert Report.from_json(r.to_json()) == r

    class FakeGpuRunner:   # what TorchCudaRunner/TensorRTRunner offer: CUDA-event times
        def device_ms(self, x, iterations, warmup):
            return [1.0, 3.0, 2.0, 5.0, 4.0][:iterations]

    x = np.zeros((1, 3, 8, 8), np.float32)
    assert device_p50_ms(FakeGpuRunner(), x, iterations=5, warmup=10) == 3.0
    # CPU runners: no device time
    assert device_p50_ms(object(), x, iterations=50, warmup=10) is None


def test_machine_line_names_the_cpu_int8_features():
    from deploykit.bench import cpu_int8_features
    from deploykit.report import summary_lines

    intel = ["processor\t: 0\n", "model name\t: Xeon\n",
             "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_tile\n"]
    assert cpu_int8_features(intel) == ["avx2", "avx512f", "avx512_vnni"]
    assert cpu_int8_features(["Features\t: fp asimd asimddp i8mm\n"]) == ["asimddp", "i8mm"]
    assert cpu_int8_features([]) == []
    r = _report()

    def machine() -> str:
        return next(line for line in summary_lines(r) if line.startswith("machine:"))

    assert "INT8 features: unknown" in machine()
    r.environment["cpu_int8_features"] = ["avx2", "avx512_vnni"]
    assert "INT8 features: avx2, avx512_vnni" in machine()


def _schema_1(r: Report) -> dict:
    """``r`` as a schema-1 report.json held it: quality figures as candidate fields, latency
    rows keyed by engine and device alone."""
    d = r.to_dict()
    for c in d["candidates"]:
        for m, values in c.pop("metrics").items():
            c[m] = values
        for m, v in c.pop("delta_pts").items():
            c[{"top1_pct": "delta_top1_pts", "map50_pct": "delta_map50_pts"}[m]] = v
        for lr in c["latency"]:
            lr.pop("name")
    for k in ("task", "primary_metric"):
        d.pop(k)
    d["schema_version"] = 1
    return d


def test_a_schema_1_report_is_still_read_and_gated_against(tmp_path):
    from report_factory import make_report

    from deploykit.gate import apply_gate, load_baseline
    from deploykit.recipe import GateSpec

    old = make_report()
    old.candidates[0].latency[0].setup = "TensorRT EP, FP16 allowed"
    old.candidates[0].latency[0].device = "cuda"
    d = _schema_1(old)
    assert "metrics" not in d["candidates"][0] and d["candidates"][0]["top1_pct"]
    back = Report.from_dict(d)
    assert back.schema_version == SCHEMA_VERSION and back.primary_metric == "top1_pct"
    assert back.candidate("prune").top1_pct == old.candidate("prune").top1_pct
    assert back.candidate("prune").delta_top1_pts == old.candidate("prune").delta_top1_pts
    assert back.candidates[0].latency[0].key == "onnxruntime-tensorrt"   # was onnxruntime-cuda
    assert back.candidates[0].latency[1].key == "onnxruntime-cpu"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d))
    spec = GateSpec(max_latency_regression={"value": 50.0, "runtime": "onnxruntime-cpu"},
                    baseline=path)
    res = apply_gate(make_report(), spec, load_baseline(spec))
    assert res.passed and res.checks and all(c.measured is not None for c in res.checks)


def test_metrics_are_a_mapping_and_every_view_shows_a_new_tasks_metric():
    """A metric deploykit has never heard of (a third task's) reaches the CSV, Markdown,
    compare and the plot's points by its key."""
    from deploykit.report import compare_reports, pareto_panels

    r = _report()
    r.task, r.primary_metric = "multilabel", "f1_pct"
    for c, v in zip(r.candidates, (80.0, 75.5), strict=True):
        c.metrics = {"f1_pct": {"onnxruntime-cpu": v, "torch-cpu": v}}
        c.delta_pts = {"f1_pct": v - 80.0}
    back = Report.from_json(r.to_json())
    assert back == r and back.candidate("prune").artifact("f1_pct") == 75.5
    rows = r.to_csv().splitlines()
    assert rows[0].split(",")[6:9] == ["f1_artifact_pct", "f1_torch_pct", "delta_f1_pts"]
    assert ",75.5,75.5,-4.5," in rows[-1]
    assert "| f1_pct ORT CPU (%) |" in r.to_markdown()
    assert ("prune", "f1_pct artifact (%)", "75.50", "75.50", "+0.00") in compare_reports(
        r, r).rows
    assert [p.top1_pct for p in pareto_panels(r)[("onnxruntime-cpu", 1)]] == [80.0]
    with pytest.raises(TypeError):   # the old names are read-only views of ``metrics``
        r.candidates[0].top1_pct["torch-cpu"] = 1.0
