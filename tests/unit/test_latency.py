from __future__ import annotations

import numpy as np
import pytest

from deploykit.bench import summarize, time_alternating


def test_summarize_percentiles_and_throughput():
    times = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    st = summarize(times, batch=10)
    assert st.iterations == 100
    assert st.p50_ms == pytest.approx(50.5)
    assert st.p90_ms == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert st.p99_ms == pytest.approx(99.01)
    assert st.min_ms == pytest.approx(1) and st.max_ms == pytest.approx(100)
    assert st.mean_ms == pytest.approx(50.5)
    assert st.std_ms == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert st.throughput_ips == pytest.approx(10 / 0.0505)


def test_summarize_rejects_empty():
    with pytest.raises(ValueError):
        summarize([], 1)


def test_time_alternating_interleaves_and_counts():
    calls: list[str] = []
    fake_now = [0.0]

    def clock():
        return fake_now[0]

    def make(name, cost):
        def fn():
            calls.append(name)
            fake_now[0] += cost
        return fn

    stats = time_alternating({"a": make("a", 0.002), "b": make("b", 0.001)}, batch=4,
                             iterations=10, warmup=2, rounds=5, clock=clock)
    assert stats["a"].iterations == 10 and stats["b"].iterations == 10
    assert stats["a"].p50_ms == pytest.approx(2.0) and stats["b"].p50_ms == pytest.approx(1.0)
    timed = calls[4:]  # after 2 warm-up calls each
    # five rounds of a,a,b,b: the candidates alternate rather than run back to back
    assert timed == ["a", "a", "b", "b"] * 5


def _fake(costs):
    """A synthetic clock and a callable whose n-th call takes costs(n) seconds."""
    now = [0.0]
    n = [0]

    def fn():
        now[0] += costs(n[0])
        n[0] += 1

    return (lambda: now[0]), fn


def test_stopping_rule_stops_once_the_median_interval_is_tight():
    rng = np.random.default_rng(0)
    clock, fn = _fake(lambda i: 0.010 * (1 + 0.01 * rng.standard_normal()))  # 1% jitter
    st = time_alternating({"m": fn}, 1, iterations=20, warmup=0, rounds=2, clock=clock,
                          target_rel_ci=0.02, max_iterations=1000)["m"]
    assert st.stop_reason == "ci" and st.iterations == 20   # already tight after the minimum
    assert st.ci_rel_halfwidth <= 0.02


def test_stopping_rule_keeps_going_while_noisy_then_hits_the_cap_or_budget():
    rng = np.random.default_rng(1)
    clock, fn = _fake(lambda i: 0.010 * rng.lognormal(0, 0.8))    # heavy-tailed, very noisy
    st = time_alternating({"m": fn}, 1, iterations=20, warmup=0, rounds=2, clock=clock,
                          target_rel_ci=0.001, max_iterations=200)["m"]
    assert st.stop_reason == "max_iterations" and st.iterations == 200
    clock, fn = _fake(lambda i: 0.010 * rng.lognormal(0, 0.8))
    st = time_alternating({"m": fn}, 1, iterations=20, warmup=0, rounds=2, clock=clock,
                          target_rel_ci=0.001, max_iterations=10_000, budget_s=1.0)["m"]
    assert st.stop_reason == "budget" and 20 < st.iterations < 200
    # moderately noisy: more runs than the minimum, then the interval is within the target
    clock, fn = _fake(lambda i: 0.010 * (1 + 0.1 * rng.standard_normal()))
    st = time_alternating({"m": fn}, 1, iterations=20, warmup=0, rounds=2, clock=clock,
                          target_rel_ci=0.02, max_iterations=10_000)["m"]
    assert st.stop_reason == "ci" and st.iterations > 20 and st.ci_rel_halfwidth <= 0.02


def test_median_interval_covers_the_true_median_about_95_percent_of_the_time():
    from deploykit.bench import median_ci

    rng = np.random.default_rng(2)
    hits = 0
    for seed in range(200):
        sample = rng.exponential(1.0, 60)
        lo, hi = median_ci(sample, resamples=500, seed=seed)
        hits += lo <= np.log(2) <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_ort_runner_median_agrees_with_a_plain_session_loop(tmp_path):
    """deploykit's timing of an ONNX Runtime session vs an independent perf_counter loop over
    session.run on the same model and inputs, alternated in one process: within 5%, as the
    median of per-round ratios (each round's two timings are adjacent in time, so a drift of
    the machine between rounds cancels; a median of medians across rounds did not)."""
    import time

    import torch

    from deploykit.export import export_onnx
    from deploykit.models.cifar_resnet import resnet20
    from deploykit.runtimes import OrtRunner

    torch.manual_seed(0)
    path = export_onnx(resnet20().eval(), (3, 32, 32), tmp_path / "m.onnx")
    runner = OrtRunner(path, threads=1)
    plain = OrtRunner(path, threads=1).session    # a second, independent session
    name = plain.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32), dtype=np.float32)
    ours, theirs = [], []
    for _ in range(5):
        st = time_alternating({"m": lambda: runner(x)}, 8, iterations=30, warmup=5,
                              rounds=1)["m"]
        ours.append(st.p50_ms)
        loop = []
        for _ in range(5):
            plain.run(None, {name: x})
        for _ in range(30):
            t0 = time.perf_counter()
            plain.run(None, {name: x})
            loop.append(time.perf_counter() - t0)
        theirs.append(float(np.median(loop)) * 1e3)
    ratio = np.median(np.array(ours) / np.array(theirs))
    assert 0.95 <= ratio <= 1.05, (ours, theirs)


def test_ort_runner_threads_stop_spinning_after_each_run(tmp_path):
    """Sessions timed alternately in one process must not leave worker threads spinning on the
    cores the next session needs (measured on the 2-core machine: 2-4x inflated medians)."""

    from deploykit.export import export_onnx
    from deploykit.models.cifar_resnet import resnet20
    from deploykit.runtimes import OrtRunner

    path = export_onnx(resnet20().eval(), (3, 32, 32), tmp_path / "m.onnx")
    opts = OrtRunner(path, threads=2).session.get_session_options()
    assert opts.get_session_config_entry("session.force_spinning_stop") == "1"
    assert opts.intra_op_num_threads == 2
