"""One self-contained HTML report per job (``output/report.html``): score, metrics, plots, timing,
resource use, the error and provenance, with images inlined and no external request."""

from shared.report.gather import (
    REPORT_NAME,
    ReportData,
    from_job,
    from_workspace,
    write_report,
    write_report_quietly,
)
from shared.report.html import render

__all__ = [
    "REPORT_NAME",
    "ReportData",
    "from_job",
    "from_workspace",
    "render",
    "write_report",
    "write_report_quietly",
]
