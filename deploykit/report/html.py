"""A self-contained ``report.html``: inline CSS, tables, the Pareto plot as a data URI.

Nothing is fetched when the page opens (no scripts, fonts, or links to other hosts), so the
file can be attached to a CI run or mailed and still render the same.
"""

from __future__ import annotations

import base64
from html import escape
from typing import TYPE_CHECKING

from deploykit.host.progress import Table
from deploykit.report.format import metric_label
from deploykit.report.tables import report_tables, summary_lines

if TYPE_CHECKING:
    from deploykit.report.model import Report

__all__ = ["html_page", "to_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#202124}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem}
th,td{border:1px solid #dadce0;padding:.25rem .55rem}th{background:#f1f3f4;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafafa}
p.note,ul.meta{color:#5f6368;font-size:.85rem}
img{max-width:100%;border:1px solid #dadce0}
""".strip()


def _table(t: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in t.headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{escape(v)}</td>' if i >= t.numeric_from
                         else f"<td>{escape(v)}</td>" for i, v in enumerate(row)) + "</tr>"
        for row in t.rows)
    note = f'<p class="note">{escape(t.note)}</p>' if t.note else ""
    return (f"<h2>{escape(t.title)}</h2>{note}<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def html_page(title: str, meta: list[str], tables: list[Table], png: bytes | None = None,
              png_title: str = "", png_alt: str = "") -> str:
    """One self-contained HTML page: a title, meta lines, an optional PNG, then tables."""
    items = "".join(f"<li>{escape(line)}</li>" for line in meta)
    parts = [f"<h1>{escape(title)}</h1>", f'<ul class="meta">{items}</ul>']
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<h2>{escape(png_title)}</h2><img alt="{escape(png_alt)}" '
                     f'src="data:image/png;base64,{data}">')
    parts += [_table(t) for t in tables]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def to_html(report: Report, pareto_png: bytes | None = None) -> str:
    """Render ``report`` (and, if given, the PNG bytes of its Pareto plot) as one HTML page."""
    return html_page(f"deploykit report: {report.recipe_name}", summary_lines(report),
                     report_tables(report), pareto_png, "Accuracy vs latency",
                     f"Pareto plot: {metric_label(report.primary_metric)} against p50 latency "
                     "per runtime and batch")
