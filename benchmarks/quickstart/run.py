"""The quickstart as a benchmark: run README command 1's recipe, keep its report, its Pareto
plot and the summary table that README.md and benchmarks/README.md show.

Writes ``benchmarks/quickstart/results/quickstart.json`` (the command, the wall time and the
run's whole ``report.json``), ``docs/images/quickstart-pareto.png`` (the run's plot, which
README.md shows) and rewrites the table between the ``<!-- quickstart-table -->`` markers of
both READMEs from that JSON. ``tests/unit/test_numbers.py`` checks the READMEs against the JSON.

Usage (from the repository root; about 2-4 minutes on 2 cores):
    python benchmarks/quickstart/run.py                  # run the recipe, then write everything
    python benchmarks/quickstart/run.py --report RUN/report.json --wall 120   # from a finished run
    python benchmarks/quickstart/run.py --tables-only    # re-render the tables from the JSON
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "benchmarks/quickstart/results/quickstart.json"
PICTURE = ROOT / "docs/images/quickstart-pareto.png"
RECIPE = "recipes/quickstart.yaml"
READMES = (ROOT / "README.md", ROOT / "benchmarks/README.md")
BEGIN, END = "<!-- quickstart-table -->", "<!-- /quickstart-table -->"
RUNTIME = "onnxruntime-cpu"


def _latency(cand: dict[str, Any], batch: int) -> dict[str, Any] | None:
    return next((r for r in cand["latency"]
                 if r.get("name", RUNTIME) == RUNTIME and r["batch"] == batch), None)


def summary_table(result: dict[str, Any]) -> str:
    """The Markdown table of the quickstart's candidates on ONNX Runtime CPU, from ``result``
    (this script's JSON): MACs, file size, top-1 of the artifact, p50 and speed-up per batch."""
    report = result["report"]
    batches = report["recipe"]["bench"]["batch_sizes"]
    head = ["candidate", "MACs", "ONNX MB", "top-1 (ORT)"]
    for b in batches:
        head += [f"ORT p50 b{b} (ms)", f"speed-up b{b}"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|" + "---:|" * (len(head) - 1)]
    for c in report["candidates"]:
        top1 = c["metrics"].get("top1_pct", {}).get(RUNTIME)
        size = c.get("onnx_size_bytes")
        cells = [c["name"], f"{c['macs'] / 1e6:.1f} M",
                 "-" if size is None else f"{size / 1e6:.2f}",
                 "-" if top1 is None else f"{top1:.2f}%"]
        for b in batches:
            r = _latency(c, b)
            cells += (["-", "-"] if r is None else
                      [f"{r['p50_ms']:.3f}", f"{r['speedup_vs_baseline']:.2f}x"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def caption(result: dict[str, Any]) -> str:
    """The line under the table: when, where, how long."""
    report = result["report"]
    env = report["environment"]
    cpu = env.get("cpu_model") or "CPU not recorded"
    isa = ", ".join(f.upper().replace("_", "-") for f in env.get("cpu_int8_features", []))
    when = report["created_utc"][:16].replace("T", " ")
    return (f"`{result['command']}`, {when} UTC, {cpu} ({isa or 'no AVX2'}), "
            f"{env.get('cpu_cores', '?')} cores, "
            f"{result['wall_seconds'] / 60:.1f} min in all; JSON: "
            f"`benchmarks/quickstart/results/quickstart.json`.")


def block(result: dict[str, Any]) -> str:
    return f"{BEGIN}\n{summary_table(result)}\n\n{caption(result)}\n{END}"


def write_tables(result: dict[str, Any]) -> None:
    for path in READMES:
        text = path.read_text()
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        if not pattern.search(text):
            sys.exit(f"{path}: no {BEGIN} ... {END} markers to write the table between")
        path.write_text(pattern.sub(lambda _: block(result), text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--report", type=Path, help="report.json of a finished quickstart run")
    ap.add_argument("--wall", type=float, help="its wall time in seconds (with --report)")
    ap.add_argument("--tables-only", action="store_true", help="re-render the READMEs' tables")
    args = ap.parse_args(argv)
    if args.tables_only:
        write_tables(json.loads(RESULT.read_text()))
        return 0
    command = f"deploykit run {RECIPE} --output runs/quickstart"
    if args.report is None:
        out = Path(tempfile.mkdtemp(prefix="dk-quickstart-")) / "run"
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", "deploykit", "run", RECIPE,
                              "--output", str(out)], cwd=ROOT)
        wall = time.perf_counter() - start
        if rc != 0:
            sys.exit(f"the quickstart exited {rc}; nothing written")
        report_path = out / "report.json"
    else:
        report_path, wall = args.report, args.wall
        if wall is None:
            sys.exit("--report needs --wall SECONDS (the run's wall time)")
    result = {"command": command, "wall_seconds": round(wall, 1),
              "report": json.loads(report_path.read_text())}
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    shutil.copyfile(report_path.parent / "pareto.png", PICTURE)
    write_tables(result)
    print(block(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
