"""Reports: one self-contained static HTML page per run, with plots embedded."""

from xlt.report.html import render, write_report

__all__ = ["render", "write_report"]
