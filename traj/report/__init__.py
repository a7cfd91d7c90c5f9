"""Reports: render result summaries to report.md, a self-contained report.html and summary.json."""

from .writer import Report, write_report

__all__ = ["Report", "write_report"]
