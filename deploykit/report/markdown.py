"""``report.md``: the run's identity lines, then every table of the report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.report.tables import report_tables, summary_lines

if TYPE_CHECKING:
    from deploykit.report.model import Report

__all__ = ["to_markdown"]


def to_markdown(r: Report) -> str:
    """The Markdown text of ``r``."""
    lines = [f"# deploykit report: {r.recipe_name}", ""]
    lines += [f"- {line}" for line in summary_lines(r)]
    for t in report_tables(r):
        lines += ["", f"## {t.title}", ""]
        if t.note:
            lines += [t.note, ""]
        lines.append("| " + " | ".join(t.headers) + " |")
        lines.append("|" + "".join("---:|" if i >= t.numeric_from else "---|"
                                   for i in range(len(t.headers))))
        lines += ["| " + " | ".join(row) + " |" for row in t.rows]
    return "\n".join(lines) + "\n"
