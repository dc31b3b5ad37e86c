"""A run directory's writer: one process at a time holds its lock (an advisory ``flock`` on a file
naming the holder), a directory that already holds a run is never written over silently, and a
run whose writer has gone is told apart from one still going."""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from visionbench.errors import VisionbenchError
from visionbench.fsutil import open_regular

LOCK_FILE = ".visionbench.lock"


def _clock(unix: float) -> str:
    return datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M")


def holder(directory: Path) -> dict[str, Any] | None:
    """Who holds ``directory``'s lock now (pid, host, since, command), or None when nobody does:
    a holder that died (Ctrl-C, SIGKILL, a crash, a reboot) has released it with its process."""
    path = directory / LOCK_FILE
    try:  # reading only: looking at a run never writes into it
        with os.fdopen(open_regular(path, os.O_RDONLY)) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    info = json.loads(f.read() or "{}")
                except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deeply
                    info = {}
                return info if isinstance(info, dict) else {}
            fcntl.flock(f, fcntl.LOCK_UN)
            return None
    except OSError:  # no lock file (or not ours to open): nobody writes there through it
        return None


def describe_holder(info: dict[str, Any]) -> str:
    since = f" since {_clock(info['since'])}" if isinstance(info.get("since"), int | float) else ""
    command = f" ({info['command']})" if info.get("command") else ""
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}{since}{command}"


def busy(directory: Path, info: dict[str, Any]) -> VisionbenchError:
    return VisionbenchError(f"{directory} is being written by another visionbench "
                            f"({describe_holder(info)}); wait for it to finish or give another "
                            "--output")


@dataclass
class RunLock:
    """The lock of a run directory, held from ``acquire`` until ``release`` or the process ends."""

    directory: Path
    _fd: int | None = field(default=None, repr=False)
    #: Whether ``acquire`` made the lock file (``abandon`` removes it then).
    created: bool = False

    @classmethod
    def acquire(cls, directory: Path, command: list[str]) -> RunLock:
        """Take ``directory``'s lock, or fail with one line naming the process that holds it, or
        why the lock file cannot be written (then a lock file made here is removed)."""
        path = directory / LOCK_FILE
        try:  # held open for the whole run
            try:
                lock = cls(directory, open_regular(path, os.O_RDWR | os.O_CREAT | os.O_EXCL), True)
            except FileExistsError:  # there already (a link planted there: refused)
                lock = cls(directory, open_regular(path, os.O_RDWR))
        except OSError as e:
            raise cls._failed(path, e) from e
        try:
            fcntl.flock(lock._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.release()
            raise busy(directory, holder(directory) or {}) from None
        try:  # who holds it, for the one line of a writer refused (a full disk fails here)
            os.ftruncate(lock._fd, 0)
            os.write(lock._fd, json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                "command": " ".join(command)[:500]}).encode())
        except OSError as e:
            lock.abandon()
            raise cls._failed(path, e) from e
        return lock

    @staticmethod
    def _failed(path: Path, e: OSError) -> VisionbenchError:
        why = ("it is a link" if e.errno == errno.ELOOP else
               "it is not a regular file" if e.errno == errno.EINVAL else e.strerror)
        return VisionbenchError(f"cannot lock {path.parent} through {path.name}: {why}; "
                                "nothing written")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the flock
            self._fd = None

    def abandon(self) -> None:
        """Release the lock of a claim given up, removing the lock file where this one made it."""
        self.release()
        if self.created:
            (self.directory / LOCK_FILE).unlink(missing_ok=True)


def stopped_at(directory: Path, status: str) -> float | None:
    """For a run recorded as running whose writer is gone: when it last wrote (Unix time);
    None while it runs, or once it finished."""
    if status != "running" or holder(directory) is not None:
        return None
    try:
        return (directory / "results.json").stat().st_mtime
    except OSError:
        return None


def ended_text(unix: float) -> str:
    return f"ended without finishing (the process stopped at {_clock(unix)})"


@dataclass
class Aside:
    """A run moved out of the way by ``--overwrite``: deleted once the new run has stored its
    first record, put back if the new run ends without any."""

    original: Path
    moved: Path

    def drop(self) -> None:
        shutil.rmtree(self.moved, ignore_errors=True)

    def restore(self) -> None:
        shutil.rmtree(self.original, ignore_errors=True)
        try:
            os.replace(self.moved, self.original)
        except OSError as e:
            raise VisionbenchError(f"cannot put the old run back in {self.original}: "
                                   f"{e.strerror}; it is kept whole in {self.moved}") from e

    def undo(self, e: BaseException) -> None:
        """Put the old run back after ``e`` stopped the new one before it began; the one line
        of a VisionbenchError says so."""
        self.restore()
        if isinstance(e, VisionbenchError):
            raise VisionbenchError(f"{e}; the old run is put back in {self.original}") from e


ASIDE_TAG = ".overwritten-"


def moved_aside(directory: Path) -> list[Path]:
    """The runs ``--overwrite`` moved aside from ``directory`` and left there, newest first."""
    found = directory.parent.glob(f".{glob.escape(directory.name)}{ASIDE_TAG}*")
    return sorted((p for p in found if p.is_dir() and not p.is_symlink()),
                  key=lambda p: p.stat().st_mtime, reverse=True)


def move_aside(directory: Path) -> Aside:
    """Rename ``directory`` to a hidden sibling, so the new run starts in an empty one."""
    moved = directory.with_name(f".{directory.name}{ASIDE_TAG}{os.getpid()}-{int(time.time())}")
    try:
        os.replace(directory, moved)
    except OSError as e:
        raise VisionbenchError(f"cannot move the old run {directory} aside: {e.strerror}; it "
                               "is left as it was") from e
    return Aside(directory, moved)
