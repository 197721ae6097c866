"""What a ``deploykit tune`` study leaves behind: every trial's measured point, the front
(feasible points no other feasible point beats on both accuracy drop and latency ratio), the
best point under the constraints (the fastest on the front), each front point as a plain
recipe that ``deploykit run`` reproduces, and a report page with the trials plot.

Files, each written atomically: ``tune.json``, ``trials.csv``, ``tune.md``, ``tune.html``,
``tune.png`` and ``front/trial-<n>.yaml``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from deploykit.host.progress import Table
from deploykit.recipe import Recipe
from deploykit.report.html import html_page
from deploykit.runfiles.atomic import write_text, write_with

__all__ = ["TUNE_FILES", "front_numbers", "is_feasible", "study_rows", "write_results"]

TUNE_FILES = ("tune.json", "trials.csv", "tune.md", "tune.html", "tune.png")


def is_feasible(t: Any) -> bool:
    """Whether a finished trial met every constraint it recorded (none recorded: no)."""
    return all(v <= 0 for v in (t.user_attrs.get("constraints") or {"none": 1.0}).values())


def front_numbers(study: Any, latest: Any = None) -> list[int]:
    """Trial numbers on the front: feasible finished trials that no other feasible one beats
    on both objectives (Optuna's best trials), one per config hash (a repeated setting keeps
    its first trial). ``latest``: a just-finished trial to count even if the study's view of
    its storage does not show it yet (progress callbacks)."""
    import optuna

    trials = {t.number: t for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    if latest is not None and latest.state == optuna.trial.TrialState.COMPLETE:
        trials[latest.number] = latest
    feasible = [t for t in sorted(trials.values(), key=lambda t: t.number) if is_feasible(t)]

    def beaten(t: Any) -> bool:
        return any(all(a <= b for a, b in zip(o.values, t.values, strict=True))
                   and o.values != t.values for o in feasible)

    seen, out = set(), []
    for t in feasible:
        h = t.user_attrs.get("config_hash")
        if h in seen or beaten(t):
            continue
        seen.add(h)
        out.append(t.number)
    return out


def study_rows(study: Any) -> list[dict[str, Any]]:
    """One JSON-ready row per trial, in trial order."""
    front = set(front_numbers(study))
    rows = []
    for t in study.get_trials(deepcopy=False):
        point = t.user_attrs.get("point") or {}
        rows.append({"number": t.number, "state": t.state.name.lower(),
                     "params": t.user_attrs.get("params", {}),
                     "config_hash": t.user_attrs.get("config_hash"),
                     "duplicate_of": t.user_attrs.get("duplicate_of"),
                     "feasible": t.state.name == "COMPLETE" and is_feasible(t),
                     "on_front": t.number in front, "seconds": t.user_attrs.get("seconds"),
                     "gate_passed": t.user_attrs.get("gate_passed"),
                     "pruned_reason": t.user_attrs.get("pruned_reason"),
                     "early_latency_ratio": t.user_attrs.get("early_latency_ratio"),
                     "trial_dir": t.user_attrs.get("trial_dir"), **point})
    return rows


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    front = [r for r in rows if r["on_front"]]
    return min(front, key=lambda r: (r["latency_ratio"], r["accuracy_drop"])) if front else None


def _plot(rows: list[dict[str, Any]], best: dict[str, Any] | None, title: str,
          recipe: Recipe):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.axvline(1.0, color="#5f6368", linestyle="--", linewidth=1, label="baseline latency")
    c = recipe.tune.constraints
    if c.max_latency_ratio is not None:
        ax.axvline(c.max_latency_ratio, color="#d93025", linestyle=":", linewidth=1,
                   label="max_latency_ratio")
    if c.max_accuracy_drop is not None:
        ax.axhline(c.max_accuracy_drop, color="#d93025", linestyle="-.", linewidth=1,
                   label="max_accuracy_drop")
    done = [r for r in rows if "latency_ratio" in r and r["duplicate_of"] is None]
    for group, style in ((lambda r: not r["feasible"], dict(color="#9aa0a6", marker="x",
                                                            label="infeasible")),
                         (lambda r: r["feasible"] and not r["on_front"],
                          dict(color="#1a73e8", marker="o", label="feasible")),
                         (lambda r: r["on_front"], dict(color="#d93025", marker="o",
                                                        label="front"))):
        pts = [r for r in done if group(r)]
        if pts:
            ax.scatter([r["latency_ratio"] for r in pts], [r["accuracy_drop"] for r in pts],
                       zorder=3, **style)
    front = sorted((r for r in done if r["on_front"]), key=lambda r: r["latency_ratio"])
    if front:
        ax.step([r["latency_ratio"] for r in front], [r["accuracy_drop"] for r in front],
                where="post", color="#d93025", alpha=0.5)
    if best is not None:
        ax.scatter([best["latency_ratio"]], [best["accuracy_drop"]], s=260, marker="*",
                   color="#f9ab00", edgecolor="black", zorder=4, label="best")
    for r in done:
        ax.annotate(str(r["number"]), (r["latency_ratio"], r["accuracy_drop"]),
                    textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel("latency over the baseline's (same run)")
    ax.set_ylabel("accuracy drop of the artifact (points)")
    ax.set_title(f"{title}: down and left is better")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if not done:
        ax.text(0.5, 0.5, "no trial measured a point", ha="center", transform=ax.transAxes)
    return fig


def _cell(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v)


def _table(rows: list[dict[str, Any]], keys: list[str]) -> Table:
    out = []
    for r in rows:
        if "latency_ratio" not in r:
            out.append((str(r["number"]), r["state"], *["" for _ in keys], "", "", ""))
            continue
        flag = "front" if r["on_front"] else ("feasible" if r["feasible"] else "infeasible")
        if r.get("int8_not_faster"):
            flag += "; INT8 not faster than float"
        out.append((str(r["number"]), r["state"], *[_cell(r["params"].get(k)) for k in keys],
                    f"{r['latency_ratio']:.3f}", f"{r['accuracy_drop']:+.2f}", flag))
    return Table("Trials", ("trial", "state", *keys, "latency ratio", "accuracy drop", "point"),
                 out, note="Latency: the last candidate's p50 over the baseline's, timed "
                           "alternately in the trial's own run. Accuracy: of the exported "
                           "artifact in its runtime.", numeric_from=2 + len(keys))


def write_results(study: Any, recipe: Recipe, out: Path, space: Any,
                  checkpoint: Path | None) -> dict[str, Any]:
    """Write the study's files into ``out``; return the summary (``tune.json``'s content).
    Front recipes start from ``checkpoint`` (the baseline on this machine)."""
    rows = study_rows(study)
    best = _best(rows)
    keys = [d.key for d in space.dims]
    for r in rows:
        if r["on_front"]:
            name = f"{recipe.name}-trial{r['number']}"
            data = space.trial_recipe(r["params"], checkpoint, name).model_dump(
                mode="json", by_alias=True)
            data.pop("tune", None)
            path = out / "front" / f"trial-{r['number']}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, f"# deploykit tune: front point, trial {r['number']} of study "
                             f"{study.study_name!r}; deploykit run reproduces it\n"
                       + yaml.safe_dump(data, sort_keys=False))
            r["recipe"] = str(path)
    summary = {"study": study.study_name, "recipe": recipe.name,
               "objectives": ["accuracy_drop", "latency_ratio"],
               "latency": recipe.tune.latency.model_dump(),
               "constraints": recipe.tune.constraints.model_dump(),
               "trials": rows, "front": [r["number"] for r in rows if r["on_front"]],
               "best": None if best is None else best["number"]}
    write_text(out / "tune.json", json.dumps(summary, indent=2, default=str))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "state", *keys, "latency_ratio", "accuracy_drop", "size_mb",
                "macs_ratio", "feasible", "on_front", "duplicate_of"])
    for r in rows:
        w.writerow([r["number"], r["state"], *[json.dumps(r["params"].get(k)) for k in keys],
                    r.get("latency_ratio"), r.get("accuracy_drop"), r.get("size_mb"),
                    r.get("macs_ratio"), r["feasible"], r["on_front"], r["duplicate_of"]])
    write_text(out / "trials.csv", buf.getvalue())
    fig = _plot(rows, best, recipe.name, recipe)
    write_with(out / "tune.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    lat = recipe.tune.latency
    meta = [f"study {study.study_name!r}: {len(rows)} trials, "
            f"{sum(r['feasible'] for r in rows)} feasible, {len(summary['front'])} on the front",
            f"latency on {lat.runtime} at batch {lat.batch}",
            "best (fastest on the front): " + ("none: no feasible point" if best is None else
                                               f"trial {best['number']}, latency x"
                                               f"{best['latency_ratio']:.3f}, accuracy "
                                               f"{-best['accuracy_drop']:+.2f} pts")]
    table = _table(rows, keys)
    md = [f"# deploykit tune: {recipe.name}", "", *[f"- {m}" for m in meta], "",
          "| " + " | ".join(table.headers) + " |",
          "|" + "---|" * len(table.headers), *["| " + " | ".join(row) + " |"
                                               for row in table.rows], "", table.note, ""]
    write_text(out / "tune.md", "\n".join(md))
    write_text(out / "tune.html", html_page(
        f"deploykit tune: {recipe.name}", meta, [table], (out / "tune.png").read_bytes(),
        "Trials", "accuracy drop against latency ratio per trial; the front in red"))
    return summary
