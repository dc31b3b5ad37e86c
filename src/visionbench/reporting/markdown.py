"""summary.md: the run's sections as Markdown tables and its notices, for pasting into an issue or
a wiki."""

from __future__ import annotations

from visionbench.reporting.format import history, run_notes, subject
from visionbench.reporting.notices import notices
from visionbench.reporting.sections import Section, sections
from visionbench.results import Results


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def section_markdown(section: Section) -> list[str]:
    notes = section.footnotes()
    names = [c.name for c in section.columns] + (["note"] if notes else [])
    lines = [f"## {section.title}", "", "| " + " | ".join(names) + " |",
             "|" + "".join("---:|" if c.numeric else "---|" for c in section.columns)
             + ("---|" if notes else "")]
    for row in section.rows:
        cells = [f"**{_cell(v)}**" if i in row.alerts else _cell(v) for i, v in enumerate(row.cells)]
        lines.append("| " + " | ".join(cells + ([section.ref(row)] if notes else [])) + " |")
    extra = [f"{i}. {text}" for i, text in enumerate(notes, 1)] + [f"- {t}" for t in section.notes]
    return lines + (["", *extra] if extra else []) + [""]


def summary_markdown(results: Results) -> str:
    s = results.system
    lines = [
        f"# {subject(results).strip()} on {s.cpu_model}",
        "",
        f"{s.physical_cores} cores, {s.logical_cpus} logical CPUs, "
        f"{s.memory_total_gib} GiB; ISA: {' '.join(s.isa_flags)}; {s.os}.  ",
        "Software: " + ", ".join(f"{k} {v}" for k, v in results.software.items()) + ".  ",
        f"Run {results.created_at}, status {results.state}, {results.config.threads} threads."
        + (f"  \n{h}" if (h := history(results)) else ""),
        "",
    ]
    for section in sections(results):
        lines += section_markdown(section)
    if notes := run_notes(results):
        lines += [*[f"- {text}" for text in notes], ""]
    if found := notices(results):
        lines += ["## Notices", "", *[f"- {n.level}: {n.subject}: {n.text}" for n in found]]
    return "\n".join(lines).rstrip("\n") + "\n"
