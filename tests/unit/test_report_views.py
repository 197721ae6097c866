"""report.html / results.csv / pareto.png / compare: content, self-containment, plotted data."""

from __future__ import annotations

import base64
import csv
import io
import re

import numpy as np
import pytest
from report_factory import latency, make_report

from deploykit.cli import main
from deploykit.report import (
    CSV_COLUMNS,
    REPORT_FILES,
    ParetoPoint,
    compare_reports,
    pareto_frontier,
    pareto_panels,
    render_pareto,
    to_html,
    write_report_files,
)


def _three_candidates():
    r = make_report(cand_top1=90.0, cand_ms={1: 1.0, 64: 20.0})
    slow_bad = make_report(cand_top1=85.0, cand_ms={1: 1.5, 64: 30.0}, name="bad").candidates[1]
    r.candidates.append(slow_bad)
    return r


def test_frontier_drops_dominated_points():
    pts = [ParetoPoint("base", 2.0, 91.0), ParetoPoint("prune", 1.0, 90.0),
           ParetoPoint("bad", 1.5, 85.0), ParetoPoint("tie", 1.0, 90.0)]
    assert [p.name for p in pareto_frontier(pts)] == ["prune", "tie", "base"]


def test_pareto_figure_plots_every_candidate_on_every_panel():
    r = _three_candidates()
    panels = pareto_panels(r)
    assert set(panels) == {("onnxruntime-cpu", 1), ("onnxruntime-cpu", 64)}
    fig = render_pareto(r)
    axes = fig.get_axes()
    assert len(axes) == 2
    for ax, ((_rt, batch), points) in zip(axes, panels.items(), strict=True):
        labels = sorted(t.get_text() for t in ax.texts)
        assert labels == ["bad", "baseline", "prune"]
        plotted = sorted(tuple(map(float, xy)) for coll in ax.collections
                         for xy in coll.get_offsets())
        expected = sorted((c.latency_at("onnxruntime-cpu", batch).p50_ms,
                           c.artifact_top1_pct()) for c in r.candidates)
        assert np.allclose(plotted, expected)
        frontier = [coll for coll in ax.collections if coll.get_label() == "Pareto frontier"]
        assert np.allclose(sorted(tuple(map(float, xy)) for xy in frontier[0].get_offsets()),
                           sorted((p.latency_ms, p.top1_pct) for p in pareto_frontier(points)))
        assert str(batch) in ax.get_title()


def test_html_is_self_contained_with_tables_and_plot(tmp_path):
    r = _three_candidates()
    paths = write_report_files(r, tmp_path)
    assert set(paths) == set(REPORT_FILES)
    html = (tmp_path / "report.html").read_text()
    assert "<table>" in html and "<td>prune</td>" in html and "Latency" in html
    assert "conv1, fc" in html  # layers kept float
    m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert m and base64.b64decode(m.group(1)) == (tmp_path / "pareto.png").read_bytes()
    # nothing is loaded from anywhere: no external src/href, no scripts, no @import
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_escapes_names():
    r = make_report(name="<b>x</b>")
    assert "&lt;b&gt;x&lt;/b&gt;" in to_html(r)


def test_csv_one_row_per_candidate_runtime_batch():
    r = _three_candidates()
    r.candidates.append(make_report(name="untimed", cand_ms={}).candidates[1])
    r.candidates[-1].latency = []
    rows = list(csv.DictReader(io.StringIO(r.to_csv())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 3 * 2 + 1
    prune64 = next(x for x in rows if x["candidate"] == "prune" and x["batch"] == "64")
    rec = r.candidate("prune").latency_at("onnxruntime-cpu", 64)
    assert float(prune64["p50_ms"]) == pytest.approx(rec.p50_ms)
    assert float(prune64["speedup_vs_baseline"]) == pytest.approx(rec.speedup_vs_baseline)
    assert prune64["layers_kept_float"] == "conv1;fc"
    assert next(x for x in rows if x["candidate"] == "untimed")["p50_ms"] == ""


def test_markdown_lists_stage_seconds_and_kept_float():
    md = make_report().to_markdown()
    assert "| prune | 12.5 | - | macs_ratio=0.5 |" in md
    assert "| prune | fp32 | conv1, fc |" in md
    assert "p50 95% CI" in md


def test_compare_shows_changes_and_one_sided_candidates():
    a = make_report(cand_top1=90.0, cand_ms={1: 1.0, 64: 20.0}, seed=1)
    b = make_report(cand_top1=89.0, cand_ms={1: 1.5, 64: 20.0}, seed=2)
    b.candidates.append(make_report(name="quantize").candidates[1])
    t = compare_reports(a, b)
    rows = {(r[0], r[1]): r for r in t.rows}
    assert rows[("prune", "top-1 artifact (%)")][4] == "-1.00"
    change = float(rows[("prune", "p50 onnxruntime-cpu b1 (ms)")][4].rstrip("%"))
    assert change == pytest.approx(50.0, abs=5.0)
    assert rows[("quantize", "MACs (M)")][2] == "-"  # only in B


def test_cli_report_regenerates_and_compare_prints(tmp_path, capsys):
    r = make_report()
    (tmp_path / "report.json").write_text(r.to_json())
    assert main(["report", str(tmp_path / "report.json")]) == 0
    for name in REPORT_FILES:
        assert (tmp_path / name).is_file(), name
    other = tmp_path / "b.json"
    r2 = make_report(cand_top1=80.0)
    r2.candidates[1].latency = [latency(3.0, 1)]
    other.write_text(r2.to_json())
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "report.json"), str(other)]) == 0
    err = capsys.readouterr().err
    assert "top-1 artifact" in err and "-10.00" in err
    assert main(["compare", str(tmp_path / "report.json"), str(tmp_path / "nope.json")]) == 2


def test_the_pareto_plot_keeps_labels_apart_and_the_axis_on_what_ships():
    """Crowded candidates get labels that overlap neither each other nor the legend; a step a
    later stage recovers (prune before prune+distill, far below) stays off the axis range and
    the frontier, drawn on the lower edge with its value in the label."""
    from deploykit.report import CandidateReport, LatencyRecord, Report
    from deploykit.report.plot import pareto_frontier, pareto_panels, render_pareto

    def cand(name, top1, ms, precision="fp32"):
        rec = LatencyRecord(runtime="onnxruntime", device="cpu", precision=precision,
                            threads=2, batch=1, p50_ms=ms, p90_ms=ms, p99_ms=ms, mean_ms=ms,
                            std_ms=0.0, min_ms=ms, max_ms=ms, throughput_ips=1e3 / ms,
                            iterations=5, name="onnxruntime-cpu")
        return CandidateReport(name, precision, 10, 10, f"{name}.onnx", 1000,
                               metrics={"top1_pct": {"onnxruntime-cpu": top1}}, latency=[rec])

    r = Report(recipe_name="crowded", recipe_hash="x", seed=0, created_utc="", environment={},
               recipe={}, stages=[], candidates=[
                   cand("baseline", 99.7, 0.65), cand("prune", 9.7, 0.44),
                   cand("prune+distill", 99.2, 0.44), cand("ptq-int8", 99.4, 0.42, "int8"),
                   cand("fp16", 99.4, 0.43), cand("another", 99.3, 0.43)])
    points = pareto_panels(r)[("onnxruntime-cpu", 1)]
    assert "prune" not in {p.name for p in pareto_frontier(points)}
    fig = render_pareto(r)
    ax = fig.axes[0]
    assert ax.get_ylim()[0] > 90 and ax.get_ylim()[1] <= 100.0
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    for t in ax.texts:
        t.update_positions(renderer)
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]   # the words, not leaders
    assert len(boxes) == 6 and "prune (9.7, below)" in {t.get_text() for t in ax.texts}
    legend = ax.get_legend().get_window_extent(renderer)
    for i, a in enumerate(boxes):
        assert not a.overlaps(legend), ax.texts[i].get_text()
        for j, b in enumerate(boxes[i + 1:], i + 1):
            assert not a.overlaps(b), (ax.texts[i].get_text(), ax.texts[j].get_text())


def test_the_verdict_ships_the_fastest_within_the_bound_steps_compare_with_what_they_replace():
    from deploykit.report import CandidateReport, LatencyRecord, Report, ship_verdict
    from deploykit.report.tables import summary_lines
    from deploykit.report.verdicts import step_verdicts

    def cand(name, top1, ms, size, precision="fp32"):
        rec = LatencyRecord(runtime="onnxruntime", device="cpu", precision=precision,
                            threads=2, batch=64, p50_ms=ms, p90_ms=ms, p99_ms=ms, mean_ms=ms,
                            std_ms=0.0, min_ms=ms, max_ms=ms, throughput_ips=1e3 / ms,
                            iterations=5, name="onnxruntime-cpu",
                            speedup_vs_baseline=20.0 / ms)
        one = LatencyRecord(**{**rec.__dict__, "batch": 1})
        return CandidateReport(name, precision, 10, 10, f"{name}.onnx", size,
                               metrics={"top1_pct": {"onnxruntime-cpu": top1}},
                               delta_pts={"top1_pct": top1 - 99.7}, latency=[rec, one])

    cands = [cand("baseline", 99.7, 20.0, 4_000_000), cand("prune", 99.6, 5.0, 1_000_000),
             cand("prune+distill", 99.2, 9.0, 1_000_000),
             cand("ptq-int8", 98.0, 8.0, 500_000, "int8")]
    r = Report(recipe_name="v", recipe_hash="x", seed=0, created_utc="", environment={},
               recipe={"gates": {"max_accuracy_drop": 1.0,
                                 "min_speedup": {"value": 1.5, "runtime": "onnxruntime-cpu",
                                                 "batch": 64}}},
               stages=[], candidates=cands, gate={"candidate": "ptq-int8", "passed": False})
    verdict = ship_verdict(r)
    # prune is fastest and within the bound but a later stage recovers it; ptq-int8 is faster
    # than prune+distill but 1.7 points down, past the recipe's 1.0
    assert verdict.startswith("ship prune+distill: 2.22x the baseline's speed on "
                              "onnxruntime-cpu at batch 64"), verdict
    assert "top-1 -0.50 pts (bound 1, gates.max_accuracy_drop)" in verdict
    assert verdict.endswith("gate on ptq-int8: FAILED")
    assert summary_lines(r)[0] == f"verdict: {verdict}"
    steps = dict(line.split(": ", 1) for line in step_verdicts(r))
    assert "than baseline" in steps["prune+distill"]            # not "than prune"
    assert "than prune+distill" in steps["ptq-int8"]
    assert steps["prune"].endswith("(a step a later stage recovers)")


def test_the_report_says_which_runtime_runs_each_candidate_fastest():
    """Two runtimes timed: per candidate and batch, the fastest, the next one and the margin;
    a gate can bind to the OpenVINO rows by name."""
    from deploykit.gate import evaluate_gates
    from deploykit.recipe import GateSpec
    from deploykit.report.tables import report_tables
    from deploykit.report.verdicts import fastest_runtimes

    r = make_report()
    for c, ms in zip(r.candidates, (1.5, 0.5), strict=True):   # OpenVINO: base slower, cand faster
        rec = latency(ms, 1, seed=7)
        rec.name = "openvino-cpu"
        rec.runtime = "openvino"
        c.latency.append(rec)
    r.candidates[1].latency[-1].speedup_vs_baseline = 3.0
    got = {(f.candidate, f.batch): (f.runtime, f.runner_up) for f in fastest_runtimes(r)}
    assert got == {("baseline", 1): ("openvino-cpu", "onnxruntime-cpu"),
                   ("prune", 1): ("openvino-cpu", "onnxruntime-cpu")}   # b64: one runtime only
    table = next(t for t in report_tables(r) if t.title == "Fastest runtime per candidate")
    row = next(row for row in table.rows if row[0] == "prune")
    assert row[3] == "OpenVINO CPU" and row[5] == "ORT CPU"
    assert float(row[7].rstrip("x")) == pytest.approx(float(row[6]) / float(row[4]), rel=0.01)
    result = evaluate_gates(r, GateSpec(min_speedup={"value": 2.5, "runtime": "openvino-cpu",
                                                     "batch": 1}))
    assert result.passed and "openvino-cpu" in result.checks[0].name, result.checks
    result = evaluate_gates(r, GateSpec(min_speedup={"value": 3.5, "runtime": "openvino-cpu",
                                                     "batch": 1}))
    assert not result.passed
