"""The run report: its data (JSON round-trip), its views (Markdown, CSV, HTML, Pareto plot),
writing them into a run folder, and comparing two reports."""

from deploykit.host.progress import Table
from deploykit.report.compare import compare_reports
from deploykit.report.csvfile import CSV_COLUMNS, csv_columns
from deploykit.report.files import (
    REPORT_FILES,
    load_report,
    rewrite_report_files,
    write_report_files,
)
from deploykit.report.format import METRIC_LABELS, metric_label
from deploykit.report.html import to_html
from deploykit.report.model import SCHEMA_VERSION, CandidateReport, LatencyRecord, Report
from deploykit.report.plot import (
    ParetoPoint,
    pareto_frontier,
    pareto_panels,
    render_pareto,
    save_pareto,
)
from deploykit.report.tables import report_tables, summary_lines, summary_table
from deploykit.report.verdicts import float_twin, int8_recommendation, ship_verdict

__all__ = [
    "CSV_COLUMNS",
    "METRIC_LABELS",
    "REPORT_FILES",
    "SCHEMA_VERSION",
    "CandidateReport",
    "LatencyRecord",
    "ParetoPoint",
    "Report",
    "Table",
    "compare_reports",
    "csv_columns",
    "float_twin",
    "int8_recommendation",
    "load_report",
    "metric_label",
    "pareto_frontier",
    "pareto_panels",
    "render_pareto",
    "report_tables",
    "rewrite_report_files",
    "save_pareto",
    "ship_verdict",
    "summary_lines",
    "summary_table",
    "to_html",
    "write_report_files",
]
