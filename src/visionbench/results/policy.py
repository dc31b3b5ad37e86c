"""A run directory's policy: which directory a command may write (``claim``: a new run, or the
run it holds with ``--append``/``resume``, or an old run moved aside with ``--overwrite``), which
machine facts and model files must match for measurements to join a run (``check_joinable``,
``join``), and what a joined run still needs measured (``to_measure``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from visionbench.errors import VisionbenchError
from visionbench.results.kinds import Results
from visionbench.results.rundir import Aside, RunLock, move_aside
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
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise VisionbenchError(f"output directory is not writable: {path} ({e.strerror})") from e
    return path


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


def claim(output: Path, existing: str, command: list[str],
          marks: Sequence[str] = (RESULTS_JSON,), appendable: bool = True,
          ) -> tuple[RunLock, Results | None, Aside | None]:
    """The output directory, locked for this process: with the run it already holds (append,
    resume), or empty (a new run; ``--overwrite`` moves an old one aside). ``marks``: the
    files that say a directory holds a run."""
    out = output_dir(output)
    lock = RunLock.acquire(out, command)
    try:
        if not any((out / m).exists() for m in marks):
            if existing == "resume":
                raise VisionbenchError(f"{out} holds no run to resume (no {RESULTS_JSON})")
            return lock, None, None
        if existing in ("append", "resume"):
            return lock, load(out), None
        if existing == "refuse":
            what = f" ({_summary(load(out))})" if (out / RESULTS_JSON).exists() else ""
            raise VisionbenchError(
                f"{out} already holds a run{what}; give another --output, "
                + ("--append to add to it, " if appendable else "")
                + "or --overwrite to replace it")
        aside = move_aside(out)
        try:
            fresh = RunLock.acquire(output_dir(out), command)
        except BaseException:
            aside.restore()
            raise
        lock.release()
        return fresh, None, aside
    except BaseException:
        lock.release()
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
