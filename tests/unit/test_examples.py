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


def _yaml_blocks(path: Path) -> list[str]:
    """The ```yaml blocks of a Markdown file."""
    blocks, current = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if current is None and line.strip() == "```yaml":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_the_readme_recipe_is_a_real_recipe_whose_gate_can_pass():
    """README's example recipe loads, and its gate applies to a candidate that can meet it
    (a speed-up gate on the baseline alone is refused at load)."""
    from deploykit.recipe import parse_recipe
    from deploykit.recipe.stages import candidate_names

    recipes = [b for b in _yaml_blocks(ROOT / "README.md") if b.lstrip().startswith("name:")]
    assert recipes, "README.md shows no recipe"
    for text in recipes:
        recipe = parse_recipe(yaml.safe_load(text), "README.md", check_paths=False)
        names = candidate_names(recipe.stages)
        assert recipe.gates is None or (recipe.gates.candidate or names[-1]) != "baseline"


def test_a_speedup_gate_on_the_baseline_alone_is_refused(write_yaml, capsys):
    from deploykit.cli import main

    recipe = {"model": {"name": "resnet20"}, "data": {"kind": "digits"}, "stages": [],
              "gates": {"min_speedup": {"value": 1.2, "runtime": "onnxruntime-cpu",
                                        "batch": 64}},
              "bench": {"batch_sizes": [1, 64]}}
    assert main(["inspect", str(write_yaml(recipe))]) == 2
    err = capsys.readouterr().err
    assert "gates.min_speedup 1.2: the gated candidate is the baseline" in err
    assert "add a stage" in err


def test_a_latency_gate_on_simulated_int8_is_refused(write_yaml, capsys):
    """torch-cpu times no INT8 candidate (its fake-quant simulation is not INT8 latency), so
    a latency gate there on the INT8 candidate could never be checked: refused at load."""
    from deploykit.cli import main

    recipe = {"model": {"name": "resnet20"}, "data": {"kind": "digits"},
              "stages": [{"kind": "quantize"}],
              "bench": {"runtimes": ["torch-cpu", "onnxruntime-cpu"], "batch_sizes": [1]},
              "gates": {"max_latency_ms": {"value": 5, "runtime": "torch-cpu"}}}
    assert main(["inspect", str(write_yaml(recipe))]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "gates.max_latency_ms.runtime torch-cpu: the gated candidate 'ptq-int8' is INT8" in err
    recipe["gates"]["max_latency_ms"]["runtime"] = "onnxruntime-cpu"
    assert main(["inspect", str(write_yaml(recipe))]) == 0
