"""Live console output while a run measures: a progress bar per measurement, notes, warnings."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from visionbench.harness.timing import Progress as ProgressFn
from visionbench.harness.timing import TimingPlan
from visionbench.reporter import Reporter
from visionbench.results import Measurement


class ConsoleReporter(Reporter):
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> ConsoleReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, key: str, plan: TimingPlan) -> ProgressFn:
        per_window = plan.duration if plan.duration is not None else float(plan.iterations or 1)
        unit = "s" if plan.duration is not None else " it"
        total = per_window * plan.repeats
        task = self.progress.add_task(
            f"{key} (batch {plan.batch_size})", total=total, state="preparing"
        )
        self._task = task
        windows_done = 0

        def update(phase: str, value: float) -> None:
            nonlocal windows_done
            if phase == "warmup":
                self.progress.update(task, state=f"warm-up {int(value)}/{plan.warmup}")
            elif phase == "settle":
                self.progress.update(task, state=f"window {int(value)} disturbed: waiting for the "
                                                 "cores to be quiet")
            elif phase == "timed":
                done = min(windows_done, plan.repeats - 1) * per_window + min(value, per_window)
                more = " (extra)" if windows_done >= plan.repeats else ""
                self.progress.update(
                    task, completed=done,
                    state=f"window {windows_done + 1}/{plan.repeats}{more}, "
                          f"{done:.0f}/{total:.0f}{unit}",
                )
            else:
                windows_done = int(value)
                self.progress.update(
                    task, completed=min(windows_done, plan.repeats) * per_window,
                    state=f"window {windows_done}/{plan.repeats} done",
                )

        return update

    def done(self, m: Measurement) -> None:
        if self._task is not None and m.status == "ok":
            state = f"{m.throughput_ips:.1f} img/s, ran {m.executed_precision}"
            self.progress.update(self._task, state=state)
        self._task = None
        for w in m.warnings:
            loud = w.startswith(("unstable", "disturbed", "contradiction"))
            label = ("WARNING", "bold red") if loud else ("note", "yellow")
            self.progress.console.print(Text.assemble(label, f" {m.id}: {w}"))

    def note(self, text: str) -> None:
        self.progress.console.print(Text(text, style="yellow"))

    def steps(self, key: str, total: int) -> Callable[[int, str], None]:
        task = self.progress.add_task(key, total=total, state="waiting")

        def update(done: int, state: str) -> None:
            self.progress.update(task, completed=done, state=state)

        return update
