"""Write every view of a report into a run folder: JSON, Markdown, HTML, CSV, Pareto PNG."""

from __future__ import annotations

from pathlib import Path

from deploykit.errors import DeployKitError
from deploykit.report.html import to_html
from deploykit.report.model import Report
from deploykit.report.plot import save_pareto
from deploykit.runfiles.atomic import write_text

__all__ = ["REPORT_FILES", "load_report", "rewrite_report_files", "write_report_files"]


def load_report(path: str | Path, what: str = "report") -> Report:
    """Read a ``report.json``; any problem is a :class:`DeployKitError` naming the file.

    Raises:
        DeployKitError: the file is missing, not JSON, or not a deploykit report of this schema.
    """
    import json

    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise DeployKitError(f"{what} {str(p)!r} not found; pass a run folder's report.json")
    try:
        return Report.load(p)
    except json.JSONDecodeError as e:
        raise DeployKitError(f"{p}: not valid JSON ({e}); is it a deploykit report.json?") from e
    except (ValueError, TypeError, KeyError) as e:
        raise DeployKitError(f"{p}: not a readable deploykit report: {e}") from e

REPORT_FILES = ("report.json", "report.md", "report.html", "results.csv", "pareto.png")


def write_report_files(report: Report, out_dir: str | Path, write_json: bool = True
                       ) -> dict[str, Path]:
    """Write the report files (each atomically) and return ``file name -> path``.

    ``write_json=False`` regenerates the other views from an existing ``report.json`` without
    touching it.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    if write_json:
        paths["report.json"] = write_text(out / "report.json", report.to_json())
    paths["report.md"] = write_text(out / "report.md", report.to_markdown())
    paths["results.csv"] = write_text(out / "results.csv", report.to_csv())
    paths["pareto.png"] = save_pareto(report, out / "pareto.png")
    paths["report.html"] = write_text(out / "report.html",
                                      to_html(report, paths["pareto.png"].read_bytes()))
    return paths


def rewrite_report_files(report: str | Path, output: str | Path | None = None) -> dict[str, Path]:
    """Re-render every view of a ``report.json`` (or run folder): beside it, leaving the JSON as
    it is, or into ``output`` with a copy of the JSON. The ``deploykit report`` command. In a
    finished run folder, the manifest records the new files' hashes.

    Raises:
        DeployKitError: the report is missing or unreadable.
    """
    from deploykit.runfiles.manifest import refresh_manifest

    src = Path(report)
    loaded = load_report(src)
    out = Path(output) if output is not None else (src if src.is_dir() else src.parent)
    paths = write_report_files(loaded, out, write_json=output is not None)
    refresh_manifest(out, list(paths.values()))   # a finished run folder stays verifiable
    return paths
