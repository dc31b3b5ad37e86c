"""Atomic file writes and the on-disk cache location."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from visionbench.errors import VisionbenchError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers see old or new, never half."""
    atomic_write_all({path: data})


def atomic_write_all(files: dict[Path, bytes]) -> None:
    """Write every file of ``files`` to a temporary beside it, then rename them all into place:
    where one cannot be written (a full disk, a folder not writable), none is replaced and no
    temporary is left. The OSError names the file, not its temporary."""
    temps: list[str] = []
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                           suffix=".tmp")
                temps.append(tmp)
                with os.fdopen(fd, "wb") as f:
                    # mkstemp makes the file private (0600); results and reports are shared.
                    os.fchmod(f.fileno(), 0o666 & ~_UMASK)
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(path)) from e
        for path, tmp in zip(files, temps, strict=True):
            try:
                os.replace(tmp, path)
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
        raise


def failure(e: OSError, where: Path) -> str:
    """``path: cause`` for an OSError: the file it names, else ``where``."""
    return f"{e.filename or where}: {e.strerror or e}"


def open_regular(path: Path, flags: int, mode: int = 0o644) -> int:
    """A file descriptor on ``path`` opened in place (``os.O_*`` ``flags``), never through a link
    (O_NOFOLLOW) and never blocking on a FIFO or device (O_NONBLOCK, then checked): a file planted
    in a shared folder cannot make visionbench truncate, write or wait on another. OSError with
    ELOOP for a link, EINVAL for what is not a regular file."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    os.set_blocking(fd, True)
    return fd


def own_dir(path: Path) -> Path:
    """``path`` as a real folder, made where missing; a link or file planted in its place is
    refused, so that what is written under it lands there and nowhere else."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise VisionbenchError(f"{path} is a link or a file, not a folder: nothing is "
                                   "written through it") from None
    return path


def write_ready(path: Path, facts: dict) -> None:
    """A server's ready file (``serve --ready-file``): its facts as one JSON line, written whole,
    so that a reader who sees the file reads all of it."""
    try:
        atomic_write_bytes(path, json.dumps(facts).encode() + b"\n")
    except OSError as e:
        raise VisionbenchError(f"cannot write --ready-file: {failure(e, path)}") from e


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def cache_dir() -> Path:
    """``$VISIONBENCH_CACHE``, else ``$XDG_CACHE_HOME/visionbench``, else ``~/.cache/visionbench``;
    created private (0700) where missing. One owned by another user, or that others may write,
    is refused, as ssh refuses such a key folder: a model planted there would run as this user."""
    if env := os.environ.get("VISIONBENCH_CACHE"):
        root = Path(env)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "visionbench"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = root.stat()
    except OSError as e:
        raise VisionbenchError(f"cannot use the cache folder {root}: {e.strerror}") from e
    fix = "set VISIONBENCH_CACHE to a folder of your own"
    if st.st_uid != os.geteuid():
        raise VisionbenchError(f"the cache folder {root} belongs to another user (uid "
                               f"{st.st_uid}): a model planted there would run as you; {fix}")
    if st.st_mode & 0o022:
        who = "its group and others" if st.st_mode & 0o022 == 0o022 else (
            "its group" if st.st_mode & 0o020 else "others")
        raise VisionbenchError(f"the cache folder {root} is writable by {who}: a model planted "
                               f"there would run as you; chmod go-w {root}, or {fix}")
    return root


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, or of a directory's files (relative names and contents, in order)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            h.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
