"""One place holds each benchmark number (the benchmark's JSON); the summaries in README.md,
benchmarks/README.md, the benchmark's own README and docs quote it as it is there."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _zoo() -> dict[str, int]:
    rows = json.loads((ROOT / "benchmarks/zoo/results/zoo.json").read_text())["rows"]
    tv = [r for r in rows if r["source"] == "torchvision"]
    timm = [r for r in rows if r["source"] == "timm"]
    return {"ok": sum(r["status"] == "ok" for r in tv), "n": len(tv),
            "clean": sum(r["status"] in ("ok", "DeployKitError") for r in tv),
            "tracebacks": sum(r["status"] == "traceback" for r in rows),
            "timm_ok": sum(r["status"] == "ok" for r in timm), "timm_n": len(timm)}


def test_the_zoo_counts_are_quoted_as_the_json_has_them():
    z = _zoo()
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (f"{z['ok']} of {z['n']} torchvision models complete the chain" in readme
            and f"{z['clean']} of {z['n']} complete or stop with a clear error" in readme
            and f"timm: {z['timm_ok']} of {z['timm_n']} complete" in readme)
    zoo = " ".join((ROOT / "benchmarks/zoo/README.md").read_text().split())
    assert (f"torchvision: {z['ok']}/{z['n']} complete the chain" in zoo
            and f"{z['clean']}/{z['n']} complete or stop with a DeployKitError" in zoo
            and f"{z['tracebacks']} tracebacks; timm: {z['timm_ok']}/{z['timm_n']} complete"
            in zoo)
    bench = " ".join((ROOT / "benchmarks/README.md").read_text().split())
    assert f"all {z['n']}: {z['ok']} complete" in bench
    assert f"timm: {z['timm_ok']} of {z['timm_n']} complete" in bench
    # the zoo README's history lives in HISTORY.md; no other count of the sweep stays beside
    # the current one
    quoted = {int(k) for k in re.findall(rf"\b(\d+)/{z['n']} complete", zoo)}
    assert quoted == {z["ok"], z["clean"]}, quoted


def test_the_tune_study_is_quoted_with_its_trial_count():
    rows = json.loads((ROOT / "benchmarks/tune/results/r20_tune.json").read_text())["rows"]
    doc = " ".join((ROOT / "docs/tune.md").read_text().split())
    assert f"({len(rows)} trials;" in doc
