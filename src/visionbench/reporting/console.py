"""Console tables of a run: its report's sections as rich tables (live progress is the command
line's)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from visionbench.reporting.format import run_notes, subject
from visionbench.reporting.notices import impossible, plausibility
from visionbench.reporting.sections import Section, sections
from visionbench.results import Results


def table(section: Section) -> Table:
    t = Table(title=section.title, title_justify="left")
    for c in section.columns:
        t.add_column(c.name, justify="right" if c.numeric else "left")
    notes = section.footnotes()
    if notes:
        t.add_column("note")
    for row in section.rows:
        cells = [Text(v, style="bold red" if i in row.alerts else "")
                 for i, v in enumerate(row.cells)]
        t.add_row(*cells, *([section.ref(row)] if notes else []))
    return t


def print_section(console: Console, section: Section) -> None:
    console.print(table(section))
    for i, text in enumerate(section.footnotes(), 1):
        console.print(f"[{i}] {text}", markup=False, highlight=False, soft_wrap=True)
    for text in section.notes:
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_summary(console: Console, results: Results) -> None:
    s = results.system
    console.print(Text.assemble(
        (subject(results).strip(), "bold"), f" on {s.cpu_model} ({s.cpus_available} CPUs, "
        f"ISA: {' '.join(s.isa_flags)}); status: {results.state}"))
    for section in sections(results):
        print_section(console, section)
    for text in run_notes(results):
        console.print(text, markup=False, highlight=False)
    for n in plausibility(results) + impossible(results):
        console.print(Text.assemble(("WARNING" if n.level == "warning" else "note",
                                     "bold red" if n.level == "warning" else "yellow"),
                                    f" {n.subject}: {n.text}"))
