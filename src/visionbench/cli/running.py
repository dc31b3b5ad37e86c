"""How a command runs: live progress, Ctrl-C, SIGTERM and SIGHUP keeping what was measured (and
the exit code saying which), the tables and report of a finished run, and every error as one line
on stderr."""

from __future__ import annotations

import signal
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from visionbench import api
from visionbench.cli import tables
from visionbench.cli.progress import ConsoleReporter
from visionbench.errors import Terminated, Unconfirmed, VisionbenchError
from visionbench.results import Results
from visionbench.sysinfo import available_cpus

T = TypeVar("T")

console = Console()
if not console.is_terminal:  # logs and pipes: wide enough that the tables never wrap
    console = Console(width=140)


def measure(call: Callable[..., Any], output: Path, threads: int | None,
             kept: str = "measurements already made are kept") -> Any:
    """Run ``call(reporter=..., command=...)`` under live progress; Ctrl-C keeps what was measured."""
    if threads is not None and threads > available_cpus():
        console.print(f"[yellow]note: --threads {threads} exceeds the {available_cpus()} CPUs "
                      "available; threads will share cores[/]")
    try:
        with ConsoleReporter(console) as reporter:
            return call(reporter=reporter, command=sys.argv)
    except KeyboardInterrupt as e:
        _say(f"{_stopped(e)}; {kept} in {output}")
        sys.exit(_exit_code(e))


def _say(message: str) -> None:
    """``visionbench: MESSAGE`` on stderr as one line: the control, format and line-separator
    characters a message quotes from the user's input (a newline, a terminal escape, a
    right-to-left override) are written as escapes."""
    line = "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) in
                   ("Cc", "Cf", "Zl", "Zp") else c for c in message)
    print(f"visionbench: {line}", file=sys.stderr)


def _stopped(e: KeyboardInterrupt) -> str:
    if isinstance(e, Terminated):
        return f"stopped by {signal.Signals(e.signum).name}"
    return "interrupted"


def _exit_code(e: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + the signal's number for SIGTERM (143) and SIGHUP (129)."""
    return 128 + (e.signum if isinstance(e, Terminated) else signal.SIGINT)


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def execute(call: Callable[..., Results], kw: dict[str, Any]) -> None:
    """Measure, print the tables, write the report; a failed measurement fails the command.
    With ``dry_run`` (run's), only print what would be measured and where."""
    if kw.pop("dry_run", False):
        return tables.print_dry_run(console, api.dry_run(**kw))
    kw["output"] = kw.get("output") or api.default_output()
    results = measure(lambda **k: call(**k, **kw), kw["output"], kw.get("threads"))
    tables.print_results(console, results)
    console.print(f"results: {results.directory}/results.json")
    report_run(results)
    if results.status == "failed":
        raise VisionbenchError("some measurements failed; see the table above")


def confirmed(call: Callable[[bool], T], question: Callable[[], str]) -> T:
    """``call(False)``; where the API asks for a confirmation, the user's on a terminal (then
    ``call(True)``), one line saying how to give it elsewhere."""
    try:
        return call(False)
    except Unconfirmed as e:
        if not sys.stdin.isatty():
            raise VisionbenchError(f"{e} (no terminal here to ask on)") from e
        click.confirm(question(), abort=True)
        return call(True)


def report_run(results: Results) -> None:
    console.print("report: " + ", ".join(str(p) for p in api.report(results)))


def run(cli: click.Group) -> None:
    """Run the command line ``cli``: every error one line, every stop its exit code."""
    # What timeout, systemd, Kubernetes, Slurm and Ray send to stop a job, and a closed terminal:
    # handled as Ctrl-C is, so that a run stopped this way is marked so and keeps its results.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    for arg in sys.argv[1:]:  # results.json records the command, in UTF-8
        try:
            arg.encode()
        except UnicodeEncodeError:
            _say(f"error: {arg!a} is not UTF-8 text: rename it, or give it as a path of UTF-8 "
                "names")
            sys.exit(2)
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Abort as e:
        # click turns a KeyboardInterrupt (ours: SIGTERM, SIGHUP) outside a measurement into Abort
        cause = e.__cause__ if isinstance(e.__cause__, KeyboardInterrupt) else KeyboardInterrupt()
        _say(_stopped(cause) if e.__cause__ else "aborted")
        sys.exit(_exit_code(cause))
    except KeyboardInterrupt as e:
        _say(f"{_stopped(e)}; measurements already made are kept")
        sys.exit(_exit_code(e))
    except click.ClickException as e:
        _say(f"error: {e.format_message()}")
        sys.exit(e.exit_code)
    except VisionbenchError as e:
        _say(f"error: {e}")
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
