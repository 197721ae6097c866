from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from deploykit.cli import main
from deploykit.models import build_model, make_checkpoint
from deploykit.recipe import ModelSpec


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploykit", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize(("patch", "expect"), [
    ({"train": {"epocs": 1}}, "train.epocs: unknown key"),
    ({"train": {"epochs": "ten"}}, "train.epochs"),
    ({"data": {"kind": "imagefolder", "root": "/no/such/dir"}}, "data.root: folder"),
])
def test_bad_recipes_exit_2_without_traceback(tiny_recipe_dict, write_yaml, patch, expect):
    path = write_yaml({**tiny_recipe_dict, **patch})
    proc = _run_cli("run", str(path))
    assert proc.returncode == 2
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mismatched_checkpoint_exits_2_before_training(tiny_recipe_dict, write_yaml, tmp_path,
                                                       capsys):
    ck = tmp_path / "ten.pt"
    torch.save(make_checkpoint(build_model(ModelSpec(name="resnet20", num_classes=10))), ck)
    recipe = {**tiny_recipe_dict, "model": {**tiny_recipe_dict["model"], "checkpoint": str(ck)}}
    assert main(["run", str(write_yaml(recipe)), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "has 10 classes but model.num_classes is 4" in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_corrupt_checkpoint_exits_2(tiny_recipe_dict, write_yaml, tmp_path, capsys):
    ck = tmp_path / "corrupt.pt"
    ck.write_bytes(b"\x00garbage")
    recipe = {**tiny_recipe_dict, "model": {**tiny_recipe_dict["model"], "checkpoint": str(ck)}}
    assert main(["run", str(write_yaml(recipe)), "-o", str(tmp_path / "out")]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err


def test_inspect_model_prints_first_last_and_macs(capsys):
    assert main(["inspect", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "first layer: conv1  last layer: fc" in out
    assert "MACs: 41.4" in out


def test_inspect_recipe_prints_resolved_defaults(tiny_recipe_dict, write_yaml, capsys):
    assert main(["inspect", str(write_yaml(tiny_recipe_dict))]) == 0
    out = capsys.readouterr().out
    assert "batch_sizes:" in out and "opset: 18" in out


def test_help_lists_subcommands():
    proc = _run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("run", "export", "bench", "inspect"):
        assert cmd in proc.stdout


def test_resume_without_earlier_run_is_user_error(tiny_recipe_dict, write_yaml, tmp_path,
                                                  monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(write_yaml(tiny_recipe_dict)), "--resume"]) == 2
    assert "no earlier run" in capsys.readouterr().err
