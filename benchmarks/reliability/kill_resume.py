"""kill -9 at random moments of a recipe's run, then ``--resume``: does every run end like an
uninterrupted one, and how much work is redone?

For each of ``--points`` seeded random moments (uniform over the clean run's duration), the
recipe runs into a fresh folder, is killed with SIGKILL at that moment, and is resumed. Each
resumed run is compared with the clean run: candidate names and MACs (must be equal), ONNX
Runtime top-1 (reported), epochs trained twice (at most one per interrupted training), and
the folder against its manifest (must be whole).

Usage (from the repository root):
    python benchmarks/reliability/kill_resume.py [--recipe recipes/quickstart.yaml]
        [--points 20] [--seed 0] [--work /tmp/deploykit-kill]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "DEPLOYKIT_NO_PROGRESS": "1", "COLUMNS": "200"}


def _run(recipe: Path, out: Path, resume: bool = False, kill_after: float | None = None
         ) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "deploykit", "run", str(recipe), "-o", str(out)]
    log = out.parent / f"{out.name}{'-resume' if resume else ''}.log"
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen([*cmd, *(["--resume"] if resume else [])], stdout=f, stderr=f,
                                env=ENV)
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return proc.returncode, log.read_text(), time.perf_counter() - t0


def _epoch_lines(log: str) -> list[str]:
    return re.findall(r"(\S+(?: fine-tune \d+/\d+)?(?: \(\w+\))?) epoch (\d+)/\d+:",
                      " ".join(log.split()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=Path("recipes/quickstart.yaml"))
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/deploykit-kill"))
    args = ap.parse_args()

    from deploykit.report import Report
    from deploykit.runfiles.manifest import verify_manifest

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rc, _, clean_s = _run(args.recipe, args.work / "clean")
    assert rc == 0, f"the clean run failed (exit {rc}); see {args.work / 'clean.log'}"
    clean = Report.load(args.work / "clean" / "report.json")
    rng = random.Random(args.seed)
    rows, ok = [], 0
    for i in range(args.points):
        at = rng.uniform(1.0, clean_s - 1.0)
        out = args.work / f"kill{i:02d}"
        rc_k, before, _ = _run(args.recipe, out, kill_after=at)
        rc_r, after, resume_s = _run(args.recipe, out, resume=True)
        row = {"point": i, "killed_at_s": round(at, 1), "killed": rc_k == -signal.SIGKILL,
               "resume_exit": rc_r, "resume_s": round(resume_s, 1)}
        if rc_r == 0:
            rep = Report.load(out / "report.json")
            same = ([(c.name, c.macs) for c in rep.candidates]
                    == [(c.name, c.macs) for c in clean.candidates])
            pairs = zip(rep.candidates, clean.candidates, strict=False)
            top1 = max(abs(a.top1_pct.get("onnxruntime-cpu", 0)
                           - b.top1_pct.get("onnxruntime-cpu", 0)) for a, b in pairs)
            done, redone = _epoch_lines(before), _epoch_lines(after)
            twice = len(set(done) & set(redone))
            problems = verify_manifest(out)
            row.update(same_candidates_and_macs=same, max_top1_diff=round(top1, 2),
                       epochs_before=len(done), epochs_redone=twice,
                       manifest_problems=len(problems))
            ok += same and not problems and twice <= 1
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{ok}/{args.points} resumed runs match the clean run ({clean_s:.0f} s) with at most "
          "one epoch redone and a whole manifest")
    (args.work / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
