"""What a run folder holds, and whether it is finished.

Two small JSON files frame a run:

- ``run.json``, written when the run starts: the recipe's name and the hash of the sections
  that determine its checkpoints and artifacts. ``--resume`` refuses a folder whose ``run.json``
  names another recipe (or the same one with other training, stage or export settings), so
  checkpoints are never continued by a recipe that did not make them.
- ``manifest.json``, written last: the recipe hash, the stages done, and the SHA-256 of every
  file in the folder. A folder without it is unfinished, whatever else it holds;
  :func:`verify_manifest` lists files that are missing or differ from it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

from deploykit.errors import DeployKitError
from deploykit.runfiles.atomic import write_text

__all__ = ["MANIFEST", "RUN_RECORD", "check_run_record", "folder_files", "refresh_manifest",
           "verify_manifest", "write_manifest", "write_run_record"]

RUN_RECORD = "run.json"
MANIFEST = "manifest.json"
_NOT_LISTED = {MANIFEST, ".deploykit.lock"}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_run_record(out: Path, name: str, artifact_hash: str, resume: bool) -> None:
    """Before anything is written: with ``resume``, the folder must hold a run of this recipe.

    Raises:
        DeployKitError: the folder's ``run.json`` names another recipe (or hash), or is
            unreadable, naming both recipes and the fix.
    """
    path = out / RUN_RECORD
    if not resume or not path.exists():
        return
    rec = _read_json(path)
    if rec is None:
        raise DeployKitError(f"{path}: unreadable, so this folder cannot be checked before "
                             "resuming; remove --resume to start the run afresh")
    if rec.get("artifact_hash") != artifact_hash:
        same = rec.get("recipe_name") == name
        raise DeployKitError(
            f"--resume: {out} holds a run of recipe {rec.get('recipe_name')!r}"
            f"{' with other model, data, train, stage or export settings' if same else ''} "
            f"(hash {str(rec.get('artifact_hash'))[:12]}), not of this recipe {name!r} (hash "
            f"{artifact_hash[:12]}); its checkpoints would not match. Resume with the recipe "
            "that made it, or run without --resume (or into another --output) to start afresh")


def write_run_record(out: Path, name: str, artifact_hash: str) -> None:
    """Mark ``out`` as a run of this recipe (atomically), and remove any earlier manifest:
    from now on the folder is unfinished until :func:`write_manifest`."""
    (out / MANIFEST).unlink(missing_ok=True)
    write_text(out / RUN_RECORD, json.dumps(
        {"recipe_name": name, "artifact_hash": artifact_hash, "started_utc": _now()}, indent=2))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_files(out: Path) -> list[Path]:
    """The run's files, relative to ``out``: everything except the manifest, the lock and
    hidden temporary files of interrupted writes."""
    return sorted(p.relative_to(out) for p in out.rglob("*")
                  if p.is_file() and p.name not in _NOT_LISTED
                  and not (p.name.startswith(".") and p.name.endswith(".tmp")))


def write_manifest(out: Path, recipe_hash: str, stages: list[str]) -> Path:
    """Write ``manifest.json`` last: the mark of a finished run."""
    files = {str(p): _sha256(out / p) for p in folder_files(out)}
    return write_text(out / MANIFEST, json.dumps(
        {"recipe_hash": recipe_hash, "stages_done": stages, "finished_utc": _now(),
         "files": files}, indent=2))


def refresh_manifest(out: Path, paths: list[Path]) -> bool:
    """After deploykit itself rewrote files of a finished run (``deploykit report``): record
    their new hashes, so the folder stays verifiable. Files outside ``out`` are ignored; a folder
    without a manifest (unfinished, or not a run folder) is left as it is.

    Returns:
        Whether the manifest was updated.
    """
    man = _read_json(out / MANIFEST)
    if man is None or not isinstance(man.get("files"), dict):
        return False
    root = out.resolve()
    for path in paths:
        full = Path(path).resolve()
        if full.is_file() and full.is_relative_to(root):
            man["files"][str(full.relative_to(root))] = _sha256(full)
    man["files"] = dict(sorted(man["files"].items()))
    man["refreshed_utc"] = _now()
    write_text(out / MANIFEST, json.dumps(man, indent=2))
    return True


def verify_manifest(out: Path) -> list[str]:
    """Problems with a finished run folder (empty: it is whole): no manifest, a listed file
    missing or changed, a file the manifest does not list."""
    man = _read_json(out / MANIFEST)
    if man is None or not isinstance(man.get("files"), dict):
        return [f"{out / MANIFEST}: missing or unreadable; the run did not finish"]
    problems = []
    for rel, digest in man["files"].items():
        path = out / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in the manifest but missing")
        elif _sha256(path) != digest:
            problems.append(f"{rel}: differs from the manifest's hash")
    listed = set(man["files"])
    problems += [f"{p}: not in the manifest" for p in map(str, folder_files(out))
                 if p not in listed]
    return problems
