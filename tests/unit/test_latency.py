from __future__ import annotations

import numpy as np
import pytest

from deploykit.bench.latency import summarize, time_alternating


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
