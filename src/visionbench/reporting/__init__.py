"""Reports read only from the results store: console tables, figures, summary.md, report.html."""

from __future__ import annotations

from pathlib import Path

from visionbench.results import Results


def write_report(results: Results, directory: Path) -> list[Path]:
    """The study's two figures (PNG, SVG), summary.md and report.html in the run directory."""
    from visionbench.reporting.figures import study_figures, write_outputs
    from visionbench.reporting.html import report_html
    from visionbench.reporting.markdown import summary_markdown

    figures = study_figures(results)
    return write_outputs(figures, {"summary.md": summary_markdown(results),
                                   "report.html": report_html(results, figures)}, directory)
