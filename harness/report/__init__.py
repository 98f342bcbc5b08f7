"""Tables and figures of a sweep's results: `python -m harness.report` / `build_report`."""

from harness.report.build import build_report

__all__ = ["build_report"]
