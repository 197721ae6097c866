"""The run report: its data (JSON round-trip), its views (Markdown, CSV, HTML, Pareto plot),
writing them into a run folder, and comparing two reports."""

from deploykit.report.compare import compare_reports
from deploykit.report.files import (
    REPORT_FILES,
    load_report,
    rewrite_report_files,
    write_report_files,
)
from deploykit.report.html import to_html
from deploykit.report.model import (
    CSV_COLUMNS,
    SCHEMA_VERSION,
    CandidateReport,
    LatencyRecord,
    Report,
    Table,
    int8_recommendation,
    report_tables,
    summary_lines,
    summary_table,
)
from deploykit.report.plot import (
    ParetoPoint,
    pareto_frontier,
    pareto_panels,
    render_pareto,
    save_pareto,
)

__all__ = [
    "CSV_COLUMNS",
    "REPORT_FILES",
    "SCHEMA_VERSION",
    "CandidateReport",
    "LatencyRecord",
    "ParetoPoint",
    "Report",
    "Table",
    "compare_reports",
    "int8_recommendation",
    "load_report",
    "pareto_frontier",
    "pareto_panels",
    "render_pareto",
    "report_tables",
    "rewrite_report_files",
    "save_pareto",
    "summary_lines",
    "summary_table",
    "to_html",
    "write_report_files",
]
