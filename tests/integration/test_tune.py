"""``deploykit tune`` on a tiny model and synthetic data: a study gives a front no point of
which dominates another, its front recipes reproduce their points with ``deploykit run``, a
killed study continues from its stored trials, and two workers share one SQLite study
without measuring a setting twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploykit.cli import main
from deploykit.report import Report
from deploykit.tune.results import TUNE_FILES

optuna = pytest.importorskip("optuna", reason='deploykit tune needs the "tune" extra (Optuna)')

pytestmark = pytest.mark.slow


def _recipe(tiny: dict, space: dict, trials: int = 4, **tune) -> dict:
    """The tiny recipe (conftest) with a prune stage, timed at batch 1, and a study. No INT8
    stage: whether INT8 beats float on a 16-pixel ResNet-20 depends on the machine's load
    (a trial whose INT8 is not faster is infeasible, and a study of only those has no front)."""
    return {**tiny, "name": "tiny-tune",
            "stages": [{"kind": "prune", "target": {"macs_ratio": 0.5}, "round_to": 8}],
            "bench": {**tiny["bench"], "runtimes": ["onnxruntime-cpu"], "batch_sizes": [1]},
            "tune": {"space": space, "trials": trials, "startup_trials": 2, **tune}}


@pytest.fixture
def tiny(tiny_recipe_dict) -> dict:
    return tiny_recipe_dict


RATIO = {"prune.target.macs_ratio": {"low": 0.3, "high": 0.9}}
CATEGORICAL = {"prune.importance": ["l1", "l2"], "prune.round_to": [8, 16]}


def _dominates(a: dict, b: dict) -> bool:
    pa, pb = (a["accuracy_drop"], a["latency_ratio"]), (b["accuracy_drop"], b["latency_ratio"])
    return all(x <= y for x, y in zip(pa, pb, strict=True)) and pa != pb


def _study(out: Path, name: str = "tiny-tune"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def test_a_study_gives_a_front_whose_recipes_reproduce_their_points(tiny, write_yaml, tmp_path):
    out = tmp_path / "tune"
    path = write_yaml(_recipe(tiny, {**RATIO, **CATEGORICAL}))
    assert main(["tune", str(path), "-o", str(out)]) == 0
    for name in TUNE_FILES:
        assert (out / name).is_file(), name
    summary = json.loads((out / "tune.json").read_text())
    done = [r for r in summary["trials"] if r["state"] == "complete"]
    assert len(done) >= 4
    front = [r for r in summary["trials"] if r["on_front"]]
    assert front and summary["best"] in summary["front"]
    for a in front:
        assert a["feasible"] and not any(_dominates(b, a) for b in done if b["feasible"])
    # every front point is a plain recipe; deploykit run reproduces its point
    point = front[0]
    recipe = Path(point["recipe"])
    assert recipe.is_file() and "\ntune:" not in recipe.read_text()
    again = tmp_path / "again"
    assert main(["run", str(recipe), "-o", str(again)]) == 0
    trial = Report.load(Path(point["trial_dir"]) / "report.json").candidates[-1]
    rerun = Report.load(again / "report.json").candidates[-1]
    assert rerun.macs == trial.macs and rerun.name == trial.name
    assert abs(rerun.artifact_top1_pct() - trial.artifact_top1_pct()) <= 1.0
    # the baseline was trained once and shared
    assert (out / "baseline" / "baseline.pt").is_file()
    assert not any((Path(r["trial_dir"]) / "baseline.pt").exists() for r in done)
    md = (out / "tune.md").read_text()
    assert "front" in md and "latency ratio" in md


def _spawn(recipe: Path, out: Path, trials: int) -> subprocess.Popen:
    env = {**os.environ, "DEPLOYKIT_NO_PROGRESS": "1"}
    return subprocess.Popen([sys.executable, "-m", "deploykit", "tune", str(recipe), "-o",
                             str(out), "--trials", str(trials)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_killed_study_continues_from_its_stored_trials(tiny, write_yaml, tmp_path):
    out = tmp_path / "tune"
    path = write_yaml(_recipe(tiny, RATIO))
    proc = _spawn(path, out, 3)
    deadline = time.time() + 600
    complete = []
    while time.time() < deadline and proc.poll() is None:
        time.sleep(2)
        if (out / "study.db").is_file():
            try:
                complete = [t for t in _study(out).get_trials()
                            if t.state == optuna.trial.TrialState.COMPLETE]
            except Exception:   # the study is being created
                continue
            if complete:
                break
    assert complete, "the first trial did not finish"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {t.number: t.values for t in complete}
    baseline_mtime = (out / "baseline" / "baseline.pt").stat().st_mtime
    assert main(["tune", str(path), "-o", str(out), "--trials", "3"]) == 0
    trials = _study(out).get_trials()
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                  optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 3                                     # not 3 more
    assert {t.number: t.values for t in trials if t.number in first} == first
    assert (out / "baseline" / "baseline.pt").stat().st_mtime == baseline_mtime


def test_two_workers_share_one_sqlite_study_without_duplicates(tiny, write_yaml, tmp_path):
    out = tmp_path / "tune"
    path = write_yaml(_recipe(tiny, CATEGORICAL, trials=6))   # 4 settings, 6 trials: repeats
    workers = [_spawn(path, out, 6) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=900) in (0, 1)
    trials = _study(out).get_trials()
    measured = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
                and t.user_attrs.get("duplicate_of") is None]
    hashes = [t.user_attrs["config_hash"] for t in measured]
    assert len(hashes) == len(set(hashes)) <= 4                   # no setting measured twice
    assert len({t.user_attrs.get("worker") for t in trials}) == 2  # both took trials
    for t in trials:   # a repeat takes its twin's point
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("duplicate_of"):
            twin = next(m for m in measured if m.number == t.user_attrs["duplicate_of"])
            assert t.values == twin.values
    assert len([t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                 optuna.trial.TrialState.PRUNED)]) >= 6


def _postgres_url() -> str:
    """The server .ci/run starts (DEPLOYKIT_TEST_POSTGRES); outside CI, skip without one."""
    url = os.environ.get("DEPLOYKIT_TEST_POSTGRES")
    if url is None:
        pytest.skip("no PostgreSQL server: .ci/run installs and starts one and sets "
                    "DEPLOYKIT_TEST_POSTGRES=postgresql://user:password@host/db")
    return url


def test_workers_with_their_own_folders_share_a_postgresql_study(tiny, write_yaml, tmp_path):
    """Two machines: each its own output folder (and baseline), one study on the server."""
    import uuid

    url = _postgres_url()
    name = f"dk-test-{uuid.uuid4().hex[:8]}"
    path = write_yaml(_recipe(tiny, CATEGORICAL, trials=2))
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    assert main(["tune", str(path), "-o", str(a), "--storage", url, "--study", name]) == 0
    assert main(["tune", str(path), "-o", str(b), "--storage", url, "--study", name,
                 "--trials", "3"]) == 0
    study = optuna.load_study(study_name=name, storage=url.replace(
        "postgresql://", "postgresql+psycopg://", 1))
    finished = [t for t in study.get_trials() if t.state in (
        optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 3                      # b ran one more, not three
    dirs = {Path(t.user_attrs["trial_dir"]).parent.parent for t in finished
            if t.user_attrs.get("trial_dir") and t.user_attrs.get("duplicate_of") is None}
    assert a in dirs and dirs <= {a, b}            # b's may repeat a's (then not re-run)
    summary = json.loads((b / "tune.json").read_text())   # b's results hold a's trials too
    assert len(summary["trials"]) >= 3
    optuna.delete_study(study_name=name, storage=url.replace(
        "postgresql://", "postgresql+psycopg://", 1))


def test_a_hopeless_trial_stops_before_its_recovery_training(tiny, write_yaml, tmp_path, capsys):
    raw = _recipe(tiny, {"prune.target.macs_ratio": {"low": 0.5, "high": 0.9}}, trials=2,
                  constraints={"max_latency_ratio": 0.01})
    raw["stages"] = [raw["stages"][0], {"kind": "distill", "losses": {"kd": 1.0},
                                        "train": {"epochs": 1, "lr": 0.01}}]
    out = tmp_path / "tune"
    assert main(["tune", str(write_yaml(raw)), "-o", str(out)]) == 1   # nothing feasible
    summary = json.loads((out / "tune.json").read_text())
    assert [r["state"] for r in summary["trials"]] == ["pruned", "pruned"]
    for r in summary["trials"]:
        assert "stopped before recovery" in r["pruned_reason"]
        assert 0 < r["early_latency_ratio"] < 2
        folder = out / "trials" / f"{r['number']:04d}"
        assert not (folder / "report.json").exists()
        assert not (folder / "checkpoints" / "distill0").exists()   # no recovery training
    assert "no trial met the constraints" in capsys.readouterr().err
