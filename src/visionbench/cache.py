"""The on-disk cache of built models, quantized models and exports, that heals: each entry is
recorded (size and SHA-256 of each of its files) when written; one missing a part, differing from
its record or without one is set aside and rebuilt once, with a note for the measurement, instead
of handing an engine a damaged file. Temporary files of builds that never finished are removed
once a day old."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from visionbench.errors import Unconfirmed, VisionbenchError
from visionbench.fsutil import atomic_write_text, cache_dir, failure, file_sha256, open_regular

RECORD_SUFFIX = ".record.json"
#: Where damaged entries are moved, for a look before ``visionbench cache --clear``.
SET_ASIDE = "set-aside"
LOCKS = "locks"
#: A temporary file or folder of a build (a leading dot or tmp, e.g. OpenVINO's ``.NAME.PID.xml``,
#: ``atomic_write_bytes``' ``.NAME.X.tmp``) this old is left over from a build that never finished.
STALE_SECONDS = 24 * 3600

NO_RECORD = "it has no record of its contents"

#: Everything the cache's root may hold, by name: what ``clear`` deletes (whatever lies under
#: them, recorded or not). A module that keeps something new in the cache names it here.
OWN = {
    "models": "built models and exports",
    "int8": "quantized models",
    SET_ASIDE: "damaged entries, set aside",
    LOCKS: "a lock file per entry, held while one process checks, builds and records it",
    "peak": "the machine's compiled peak kernels (harness/peak.py)",
    "machine-peak.json": "the machine's measured peak (harness/peak.py)",
}
#: The cache's own that ``clear`` keeps: what ``sysinfo --tune`` changed, for ``--reset``.
KEPT = {"machine-tune.json": "the machine's settings before sysinfo --tune (machine.py)"}

@dataclass
class CacheLog:
    """What the cache did inside one ``watch()``: each entry asked for (what it is, "hit",
    "built" or "rebuilt", and the seconds it took: checking its record on a hit, building on a
    miss), and notes (an entry rebuilt, and why)."""

    events: list[tuple[str, str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


_log: ContextVar[CacheLog | None] = ContextVar("visionbench_cache_log", default=None)


@contextmanager
def watch() -> Iterator[CacheLog]:
    """The cache's events and notes inside the block, for the record made there (a cold start's
    cache figures, a rebuilt model's note). An inner watch keeps its own, so each is told once;
    a block that raises passes its notes on to the watch around it (the record that fails there
    still tells them)."""
    log = CacheLog()
    token = _log.set(log)
    try:
        yield log
    except BaseException:
        _log.reset(token)
        for note in log.notes:
            _note(note)
        raise
    _log.reset(token)


def _event(what: str, how: str, seconds: float) -> None:
    if (log := _log.get()) is not None:
        log.events.append((what, how, seconds))


def _note(text: str) -> None:
    if (log := _log.get()) is not None:
        log.notes.append(text)


def events_text(events: list[tuple[str, str, float]]) -> dict[str, str]:
    """Cache events as results record them: what -> "hit (0.03 s)", "built (12.40 s)"."""
    return {what: f"{how} ({seconds:.2f} s)" for what, how, seconds in events}


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def _parts(path: Path, parts: Sequence[str]) -> list[Path]:
    return [path, *(path.with_name(p) for p in parts)]


def problem(path: Path) -> str | None:
    """What is wrong with a cached entry (its record's files against the disk), or None."""
    record = _record_path(path)
    try:
        files = json.loads(record.read_text())["files"]
    except FileNotFoundError:
        return NO_RECORD
    except (OSError, ValueError, KeyError, TypeError):
        return "its record is unreadable"
    for name, want in files.items():
        part = path.with_name(name)
        if not part.exists():
            return f"{name} is missing"
        size = part.stat().st_size
        if size != want["size"]:
            return f"{name} has {size} bytes, {want['size']} when written"
        if file_sha256(part) != want["sha256"]:
            return f"{name} differs from what was written (SHA-256)"
    return None


def set_aside(path: Path, parts: Sequence[str] = ()) -> None:
    """Move a damaged entry (its files and record) out of the way, into the cache's set-aside."""
    (cache_dir() / SET_ASIDE).mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix=f"{int(time.time())}-", dir=cache_dir() / SET_ASIDE))
    for p in [*_parts(path, parts), _record_path(path)]:
        with contextlib.suppress(FileNotFoundError):  # another process set it aside first
            os.replace(p, dest / p.name)


def record(path: Path, what: str, parts: Sequence[str] = ()) -> None:
    """Record a whole entry just written: what it is, and each file's size and SHA-256."""
    files = {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in _parts(path, parts)}
    atomic_write_text(_record_path(path), json.dumps(
        {"what": what, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "files": files}, indent=1))


def cached(path: Path, what: str, build: Callable[[Path], None], parts: Sequence[str] = (),
           supersedes: Sequence[Path] = ()) -> Path:
    """``path``, built by ``build(path)`` (which writes it, and its ``parts`` beside it, whole)
    where it is missing; a damaged entry is set aside and rebuilt once, with a note. Once built,
    the recorded entries of ``supersedes`` (earlier revisions of it) are removed, with a note."""
    t0 = time.perf_counter()
    try:
        with _entry_lock(path):
            return _cached(path, what, build, parts, supersedes, t0)
    except OSError as e:  # a cache folder not writable, a full disk: its temporaries removed
        raise VisionbenchError(f"cannot build the {what} in the cache: {failure(e, path)}; "
                               "what the cache held is kept") from e


@contextmanager
def _entry_lock(path: Path) -> Iterator[None]:
    """One process at a time checks, builds and records an entry: another waits, then finds it
    whole, instead of taking an entry half-written for a damaged one."""
    folder = cache_dir() / LOCKS
    folder.mkdir(exist_ok=True)
    fd = open_regular(folder / f"{path.parent.name}-{path.name}.lock", os.O_RDWR | os.O_CREAT,
                      0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _cached(path: Path, what: str, build: Callable[[Path], None], parts: Sequence[str],
            supersedes: Sequence[Path], t0: float) -> Path:
    how = "built"
    if path.exists() or _record_path(path).exists():
        why = problem(path)
        if why is None:
            _event(what, "hit", time.perf_counter() - t0)
            return path
        how = "rebuilt"
        set_aside(path, parts)
        _note(f"the cached {what} had no record of its contents (an earlier visionbench "
                      "wrote it): set aside and rebuilt" if why == NO_RECORD else
                      f"the cached {what} was damaged ({why}): set aside and rebuilt")
    path.parent.mkdir(parents=True, exist_ok=True)
    build(path)
    if not path.exists():
        raise VisionbenchError(f"building the {what} wrote nothing to {path}")
    record(path, what, parts)
    for old in supersedes:
        if _remove(old):
            _note(f"the cached {what} ({old.name}) was of an earlier revision of its build: "
                  "rebuilt, and the old entry removed")
    _event(what, how, time.perf_counter() - t0)
    return path


def _remove(path: Path) -> bool:
    """Remove a recorded entry (the files its record names, and the record); False where it has
    no readable record: what the cache did not write, it does not delete."""
    record_file = _record_path(path)
    try:
        names = list(json.loads(record_file.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (path.parent / Path(name).name).unlink()
    record_file.unlink(missing_ok=True)
    return True


def _stale(p: Path, now: float) -> bool:
    temporary = p.name.startswith((".", "tmp")) and not p.name.endswith(RECORD_SUFFIX)
    try:
        return temporary and now - p.lstat().st_mtime > STALE_SECONDS
    except OSError:
        return False


def tidy() -> list[Path]:
    """Remove the temporary files and folders of builds that stopped over a day ago."""
    now, gone = time.time(), []
    for sub in ("models", "int8"):
        folder = cache_dir() / sub
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _stale(p, now):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):  # not ours to remove: `cache` lists it
                        p.unlink(missing_ok=True)
                if not os.path.lexists(p):
                    gone.append(p)
    return gone


@dataclass(frozen=True)
class Entry:
    """One cached entry as ``visionbench cache`` lists it."""

    path: Path
    what: str
    size: int
    created_at: str
    problem: str | None


def entries() -> list[Entry]:
    """Every entry in the cache: recorded ones with their record, and files without one."""
    out: list[Entry] = []
    now = time.time()
    for sub in ("models", "int8"):
        folder = cache_dir() / sub
        if not folder.is_dir():
            continue
        recorded: set[str] = set()
        for rec in sorted(folder.glob(f"*{RECORD_SUFFIX}")):
            path = folder / rec.name[: -len(RECORD_SUFFIX)]
            try:
                data = json.loads(rec.read_text())
                recorded.update(data["files"])
                size = sum(f["size"] for f in data["files"].values())
                what, made = str(data["what"]), str(data["created_at"])
            except (OSError, ValueError, KeyError, TypeError):
                what, made, size = "?", "?", 0
            out.append(Entry(path, what, size, made, problem(path)))
        for p in sorted(folder.iterdir()):
            if p.name in recorded or p.name.endswith(RECORD_SUFFIX) or _stale(p, now):
                continue
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() \
                else p.stat().st_size
            made = datetime.fromtimestamp(p.stat().st_mtime, timezone.utc).isoformat(
                timespec="seconds")
            temporary = p.name.startswith((".", "tmp"))
            out.append(Entry(p, "temporary (a build in progress or stopped)" if temporary
                             else "unrecorded (rebuilt at its next use)", size, made, None))
    for p in foreign():
        st = p.lstat()
        out.append(Entry(p, "not visionbench's: cache --clear refuses while it is here",
                         0 if p.is_dir() else st.st_size,
                         datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(
                             timespec="seconds"), None))
    return out


def foreign() -> list[Path]:
    """What the cache's root holds that visionbench did not put there."""
    root = cache_dir()
    return sorted(p for p in root.iterdir() if p.name not in OWN and p.name not in KEPT)


def clear(*, yes: bool = False) -> int:
    """Delete the cache's own (``OWN``; not ``KEPT``); the bytes freed. Refused without ``yes``,
    and where the root holds anything else: a root set to a folder of the user's by mistake
    keeps every file."""
    root = cache_dir()
    if others := foreign():
        names = ", ".join(p.name for p in others[:5]) + (", ..." if len(others) > 5 else "")
        raise VisionbenchError(f"the cache folder {root} holds {len(others)} thing(s) visionbench "
                               f"did not put there ({names}): nothing deleted; is "
                               "VISIONBENCH_CACHE set to the right folder?")
    if not yes:
        raise Unconfirmed(f"clearing the cache {root} deletes every built and quantized model "
                          "in it: confirm it (--yes, or yes=True)")
    own = [root / name for name in OWN if os.path.lexists(root / name)]
    freed = 0
    for p in own:
        if p.is_dir() and not p.is_symlink():
            freed += sum(f.lstat().st_size for f in p.rglob("*") if f.is_file()
                         and not f.is_symlink())
            try:
                shutil.rmtree(p)
            except OSError as e:  # rmtree names what it could not remove relative to its folder
                raise OSError(e.errno, e.strerror, str(p)) from e
        else:
            freed += p.lstat().st_size
            p.unlink()
    return freed
