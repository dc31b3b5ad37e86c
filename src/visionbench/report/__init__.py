"""Reports read only from the results store: console tables, figures, summary.md."""

from __future__ import annotations

from pathlib import Path

from visionbench.fsutil import atomic_write_text
from visionbench.results import Results


def write_report(results: Results, directory: Path) -> list[Path]:
    """The study's two figures (PNG, SVG) and summary.md in the run directory."""
    from visionbench.report.figures import write_figures
    from visionbench.report.markdown import summary_markdown

    written = write_figures(results, directory)
    summary = directory / "summary.md"
    atomic_write_text(summary, summary_markdown(results))
    return [*written, summary]
