"""The shipped CI example stays consistent with the CLI it calls."""

from __future__ import annotations

from pathlib import Path

import yaml

from deploykit.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_github_workflow_runs_recipe_gate_and_uploads_report():
    wf = yaml.safe_load((ROOT / "examples" / "ci" / "deploykit.yml").read_text())
    steps = wf["jobs"]["gate"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert 'deploykit run "$RECIPE"' in runs and "deploykit gate" in runs
    assert (ROOT / wf["env"]["RECIPE"]).is_file()
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and "pareto.png" in uploads[0]["with"]["path"]
    # every flag the workflow passes exists in the gate subcommand
    gate = build_parser()._subparsers._group_actions[0].choices["gate"]
    known = {o for a in gate._actions for o in a.option_strings}
    used = {w for line in runs.splitlines() for w in line.replace("(", " ").split()
            if w.startswith("--")}
    assert used <= known | {"--output"}, used - known
