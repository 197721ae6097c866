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
