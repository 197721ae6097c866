"""kill -9 at a point of a run, then --resume: the same candidates and MACs as an uninterrupted
run, accuracy within noise, at most one epoch redone, and a folder that matches its manifest."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from deploykit.report import Report
from deploykit.runfiles.manifest import verify_manifest

pytestmark = pytest.mark.slow


def _recipe(tiny_recipe_dict) -> dict:
    return {**tiny_recipe_dict,
            "train": {**tiny_recipe_dict["train"], "epochs": 3},
            "stages": [{"kind": "prune", "target": {"ratio": 0.3},
                        "finetune": {"epochs": 2, "lr": 0.01, "schedule": "constant"}}],
            "bench": {**tiny_recipe_dict["bench"], "runtimes": ["onnxruntime-cpu"]}}


def _run(args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploykit", "run", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def _run_and_kill(args, env, marker: str, rng: random.Random) -> str:
    """Start a run, SIGKILL it a random moment (0-0.5 s) after ``marker`` is logged; return
    what it logged."""
    proc = subprocess.Popen([sys.executable, "-m", "deploykit", "run", *args], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            time.sleep(rng.uniform(0.0, 0.5))
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-2000:]
    return "".join(seen)


def _epochs(log: str, desc: str) -> list[int]:
    return [int(m) for m in re.findall(rf"{desc} epoch (\d+)/\d+:", " ".join(log.split()))]


@pytest.mark.parametrize("marker", ["baseline epoch 1/3", "stage prune", "timing onnxruntime-cpu"])
def test_kill_9_then_resume_ends_like_an_uninterrupted_run(tiny_recipe_dict, write_yaml,
                                                          tmp_path, marker):
    env = {**os.environ, "DEPLOYKIT_NO_PROGRESS": "1", "COLUMNS": "200"}
    recipe = write_yaml(_recipe(tiny_recipe_dict))
    clean = tmp_path / "clean"
    assert _run([str(recipe), "-o", str(clean)], env).returncode == 0

    out = tmp_path / "killed"
    before = _run_and_kill([str(recipe), "-o", str(out)], env, marker,
                           random.Random(marker))
    assert not (out / "manifest.json").exists()   # an unfinished run never looks finished
    resumed = _run([str(recipe), "-o", str(out), "--resume"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = resumed.stderr

    a, b = Report.load(clean / "report.json"), Report.load(out / "report.json")
    assert [c.name for c in a.candidates] == [c.name for c in b.candidates]
    assert [c.macs for c in a.candidates] == [c.macs for c in b.candidates]
    for ca, cb in zip(a.candidates, b.candidates, strict=True):
        assert abs(ca.top1_pct["onnxruntime-cpu"] - cb.top1_pct["onnxruntime-cpu"]) <= 5.0
    for desc, total in (("baseline", 3), (r"prune fine-tune \d+/\d+", 2)):
        done, redone = _epochs(before, desc), _epochs(after, desc)
        assert len(done) + len(redone) <= total + 1, (desc, done, redone)
    assert verify_manifest(out) == []
    assert json.loads((out / "manifest.json").read_text())["stages_done"] == ["prune"]
