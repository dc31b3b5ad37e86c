"""A run directory's policy: which directory a command may write (``claim``: a new run, or the
run it holds with ``--append``/``resume``, or an old run moved aside with ``--overwrite``), which
machine facts and model files must match for measurements to join a run (``check_joinable``,
``join``), and what a joined run still needs measured (``to_measure``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from visionbench.errors import VisionbenchError
from visionbench.results.kinds import Results
from visionbench.results.rundir import (
    LOCK_FILE,
    Aside,
    RunLock,
    busy,
    holder,
    move_aside,
    moved_aside,
)
from visionbench.results.schema import Invocation
from visionbench.results.store import RESULTS_JSON, load

#: What must match for measurements to join a run (``--append``, ``resume``): the machine.
MACHINE = ("cpu_model", "cpu_family_model_stepping", "isa_flags", "physical_cores", "logical_cpus")


def output_dir(path: Path) -> Path:
    """``path``, created and checked writable."""
    if path.exists() and not path.is_dir():
        raise VisionbenchError(f"output path exists and is not a directory: {path}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # a new file of no name: nothing planted is touched
            pass
    except OSError as e:
        raise VisionbenchError(f"output directory is not writable: {path}: {e.strerror}; "
                               "nothing written") from e
    return path


def recover(out: Path) -> list[str]:
    """Put back the run ``--overwrite`` moved aside from ``out`` where the run that replaced it
    stopped with no record (killed, failed, a full disk) and nobody writes it now; name any
    other left there. What was done, one line each."""
    moved = moved_aside(out)
    if not moved or holder(out) is not None:
        return []
    notes = []
    try:
        records = len(load(out).records()) if (out / RESULTS_JSON).exists() else 0
    except VisionbenchError:
        records = 0
    if records == 0:
        Aside(out, moved[0]).restore()
        notes.append(f"{out}: put back the run that --overwrite had moved aside "
                     f"({moved[0].name}): the run that replaced it stopped before its first "
                     "measurement")
        moved = moved[1:]
    notes += [f"{out}: an earlier run that --overwrite moved aside is still at {p}; delete it "
              "if it is not needed" for p in moved]
    return notes


def _summary(prior: Results) -> str:
    n = len(prior.records())
    made = prior.created_at[:16].replace("T", " ")
    return f"{prior.kind}, {n} record{'' if n == 1 else 's'}, {prior.state}, made {made}"


def check_joinable(prior: Results, models: Sequence[tuple[str, str]], system: dict[str, Any],
                   out: Path) -> None:
    """Measurements join a run only of the same model files (``models``: name and sha256 of
    each) on the same machine."""
    there = {m.name: m for m in prior.models or [prior.model]}
    for name, sha256 in models:
        had = there.get(name)
        if had is None or had.sha256 != sha256:
            old = prior.model if had is None else had
            raise VisionbenchError(
                f"{out} holds a run of another model ({old.name}, sha256 {old.sha256[:12]}; this "
                f"one: {name}, {sha256[:12]}); give another --output")
    mine = prior.system.model_dump()
    differ = [f"{k}: {_fact(mine.get(k))} there, {_fact(system.get(k))} here"
              for k in MACHINE if mine.get(k) != system.get(k)]
    if differ:
        raise VisionbenchError(f"{out} was measured on another machine ({'; '.join(differ)}); "
                               "give another --output")


def _fact(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} ISA flags"
    return str(value)


def _others(out: Path, marks: Sequence[str]) -> list[str]:
    """What a folder holds besides a run's marks and the run lock: the user's, unless a run."""
    return sorted(p.name for p in out.iterdir() if p.name not in (LOCK_FILE, *marks))


def check_output(output: Path, existing: str, marks: Sequence[str] = (RESULTS_JSON,),
                 appendable: bool = True, locked: bool = False) -> bool:
    """Refuse, creating nothing, an ``output`` this command may not write: a run without
    ``--append``/``--overwrite``, a folder of anything else without ``--overwrite`` (a folder is
    visionbench's only if it says so), no run to ``resume``, a run another process writes (but
    where this one holds the lock: ``locked``). Whether it holds a run."""
    try:
        return _check_output(output, existing, marks, appendable, locked)
    except OSError as e:  # a name too long, a folder not ours to read
        raise VisionbenchError(f"cannot use --output {output}: {e.strerror}") from e


def _check_output(output: Path, existing: str, marks: Sequence[str], appendable: bool,
                  locked: bool) -> bool:
    if not output.exists():
        if existing == "resume":
            raise VisionbenchError(f"{output} holds no run to resume (no {RESULTS_JSON})")
        return False
    if not output.is_dir():
        raise VisionbenchError(f"output path exists and is not a directory: {output}")
    if not locked and (info := holder(output)) is not None:
        raise busy(output, info)
    is_run = any((output / m).exists() for m in marks)
    if is_run and existing == "refuse":
        what = f" ({_summary(load(output))})" if (output / RESULTS_JSON).exists() else ""
        raise VisionbenchError(
            f"{output} already holds a run{what}; give another --output, "
            + ("--append to add to it, " if appendable else "")
            + "or --overwrite to replace it")
    if not is_run:
        if existing == "resume":
            raise VisionbenchError(f"{output} holds no run to resume (no {RESULTS_JSON})")
        if existing != "overwrite" and (others := _others(output, marks)):
            raise VisionbenchError(
                f"{output} is not a visionbench run and holds {len(others)} thing(s) "
                f"({_few(others, 4)}); give another --output, or --overwrite to move them "
                "aside (deleted once the new run has a measurement)")
    return is_run


def claim(output: Path, existing: str, command: list[str],
          marks: Sequence[str] = (RESULTS_JSON,), appendable: bool = True,
          ) -> tuple[RunLock, Results | None, Aside | None]:
    """The output directory, locked for this process: with the run it already holds (append,
    resume), or empty (a new run; ``--overwrite`` moves what it holds aside). ``marks``: the
    files that say a directory holds a run. A refused output is left as it was found."""
    check_output(output, existing, marks, appendable)
    made = not os.path.lexists(output)
    lock: RunLock | None = None
    try:
        out = output_dir(output)
        lock = RunLock.acquire(out, command)
        # checked again under the lock: another process may have written there meanwhile
        is_run = check_output(out, existing, marks, appendable, locked=True)
        if not is_run and not _others(out, marks):
            return lock, None, None
        if is_run and existing in ("append", "resume"):
            return lock, load(out), None
        aside = move_aside(out)
        try:
            fresh = RunLock.acquire(output_dir(out), command)
        except BaseException as e:
            aside.undo(e)
            raise
        lock.release()
        return fresh, None, aside
    except BaseException:
        if lock is not None:
            lock.abandon()
        if made:  # a folder made here for a refused claim: removed again (where still empty)
            with contextlib.suppress(OSError):
                output.rmdir()
        raise


def to_measure(prior: Results, planned: list[str], existing: str, replace: bool, out: Path,
               widen: Callable[[set[str]], set[str]], note: Callable[[str], None]
               ) -> set[str] | None:
    """Which ``planned`` records to measure in a run that holds some: with ``--append``, all
    (none may be there already unless ``--replace``: None); with ``resume``, those missing or
    failed, ``widen``ed to the records made together with them."""
    records = prior.records()
    if existing == "append":
        clash = [k for k in planned if k in records]
        if clash and not replace:
            raise VisionbenchError(
                f"{out} already holds {_few(clash)}; --replace measures them again in its place, "
                "or give another --output")
        return None
    missing = [k for k in planned if k not in records]
    failed = [k for k in planned if records.get(k) == "failed"]
    todo = widen(set(missing + failed))
    if not todo:
        note(f"nothing to resume in {out}: all {len(planned)} planned records are there")
    else:
        note(f"resuming {out}: {len(todo)} of {len(planned)} planned records to measure"
             + (f"; missing: {_few(missing)}" if missing else "")
             + (f"; failed: {_few(failed)}" if failed else ""))
    return todo


def _few(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def join(prior: Results, existing: str, out: Path, kind: str,
         models: Sequence[tuple[str, str]], system: dict[str, Any], software: dict[str, str],
         invocation: Invocation) -> Results:
    """The run ``prior`` with this invocation joining it (``--append``, ``resume``)."""
    check_joinable(prior, models, system, out)
    if kind != prior.kind and kind != "mlperf":
        raise VisionbenchError(f"{out} holds a {prior.kind} run; a {kind} cannot join it: "
                               "give another --output")
    changed = {k: f"{prior.software[k]} there, {v} here" for k, v in software.items()
               if k in prior.software and prior.software[k] != v}
    if changed:
        raise VisionbenchError(f"{out} was measured with other software versions ("
                               + "; ".join(f"{k}: {v}" for k, v in changed.items())
                               + "); give another --output")
    prior.software.update(software)
    prior.invocations = [*prior.history(), invocation]
    prior.status, prior.finished_at = "running", None
    if existing == "append":
        prior.command = [*prior.command, "+", *invocation.command]
    return prior
