"""The one way visionbench starts a process of its own: engine workers (``--isolation``), fresh
cold-start processes (``--mode cold``) and pinned instances (``--instances``, ``--layout``).

A child is ``python -m visionbench.launch.child``, never a re-run of the caller's ``__main__``
(multiprocessing's spawn re-imports it: a user's script without a main guard ran a second time
inside its own worker, and code read from stdin could not be found at all). It is given its
environment and CPU affinity (under numactl where asked) before any of its imports, receives a
``module:function`` target and a pickled payload over a socket, and talks back with the
messages of ``launch.protocol``. Why a child ended is explained in one place (``explain``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from visionbench.errors import VisionbenchError
from visionbench.launch.protocol import Message

#: Seconds a child is given to end by itself once its connection is closed, before it is killed.
GRACE = 5.0
#: The pid of the process that started the run, passed down to every child: the run's own
#: processes are that one and those below it (the window watcher never counts them as others).
ROOT_ENV = "VISIONBENCH_ROOT_PID"


#: Set by a fleet's node on its visionbench processes: the same value marks another node's of the
#: same fleet run, a known neighbour on a machine the nodes share, never a disturbance.
FLEET_ENV = "VISIONBENCH_FLEET_RUN"
#: Set on a server started for another process (serve --address: a node's Ray actor) to that
#: process's pid: the server stops once its parent is gone, so none outlives the run.
PARENT_ENV = "VISIONBENCH_SERVE_PARENT"


def root_pid() -> int:
    """The process that started this run (this one where no parent of visionbench's said)."""
    given = os.environ.get(ROOT_ENV, "")
    return int(given) if given.isdigit() else os.getpid()


@dataclass(frozen=True)
class Launch:
    """How a child is started."""

    #: How messages name it: "the onnxruntime worker process", "instance 1 (cores 2,3)".
    name: str
    #: Variables set in its environment over the parent's (an allocator, OpenMP settings).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Its CPU affinity, set before it imports anything; None: the parent's.
    cpus: tuple[int, ...] | None = None
    #: Bound with ``numactl --physcpubind --localalloc`` to ``cpus`` (memory local to them).
    numactl: bool = False
    #: A file for its stdout and stderr (its last line explains a crash); None: the parent's.
    log: Path | None = None

    def command(self) -> list[str]:
        prefix: list[str] = []
        if self.numactl and self.cpus:
            if shutil.which("numactl") is None:
                raise VisionbenchError("numactl is not installed (apt-get install numactl)")
            prefix = ["numactl", f"--physcpubind={','.join(map(str, self.cpus))}", "--localalloc"]
        return [*prefix, sys.executable, "-m", "visionbench.launch.child"]


class ChildDied(VisionbenchError):
    """The child ended, or stopped answering, before it sent what was expected."""


def explain(name: str, returncode: int | None, log: Path | None = None) -> str:
    """Why a child ended, in one line: the signal that killed it, or its exit status with the
    last line it wrote."""
    if returncode is None:
        return f"{name} stopped answering"
    if returncode < 0:
        try:
            return f"{name} was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"{name} was killed by signal {-returncode}"
    why = f"{name} exited with status {returncode}"
    if log is not None:
        try:
            lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        if lines:
            why += f" ({lines[-1]})"
    return why


class Child:
    """A started child process and its connection."""

    def __init__(self, target: str, payload: Any, how: Launch) -> None:
        self.how = how
        mine, theirs = socket.socketpair()
        # The parent's import path, so that the child finds what the parent imports (a test's
        # module, a user's package) without running the parent's main module.
        env = {**os.environ, **how.env, ROOT_ENV: str(root_pid()),
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        args = [*how.command(), str(theirs.fileno())]
        if how.cpus:
            args.append(",".join(map(str, how.cpus)))
        out = open(how.log, "wb") if how.log is not None else None  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT if out else None, env=env,
                                         pass_fds=(theirs.fileno(),))
        except OSError as e:
            mine.close()
            raise VisionbenchError(f"cannot start {how.name}: {e.strerror}") from e
        finally:
            theirs.close()
            if out is not None:
                out.close()
        self.conn = Connection(mine.detach())
        self.send((target, payload))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, msg: Any) -> None:
        try:
            self.conn.send(msg)
        except (OSError, EOFError):
            raise ChildDied(self.why()) from None

    def recv(self, timeout: float | None = None) -> Message:
        """The child's next message; ChildDied, with why, if it ends first or gives none within
        ``timeout`` seconds."""
        try:
            if timeout is not None and not self.conn.poll(timeout):
                raise ChildDied(f"{self.how.name} gave no answer in {timeout:.0f} s")
            return self.conn.recv()
        except (OSError, EOFError):
            raise ChildDied(self.why()) from None

    def affinity(self) -> list[int]:
        """The CPUs the child may run on, read back from the kernel."""
        try:
            return sorted(os.sched_getaffinity(self.proc.pid))
        except OSError:
            return []

    def why(self) -> str:
        """Why the child ended (it is given ``GRACE`` seconds to)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(GRACE)
        return explain(self.how.name, self.proc.returncode, self.how.log)

    def close(self, finished: bool = True) -> None:
        """Wait for a child that has sent everything to end; stop one that has not (Ctrl-C, an
        error of the parent's, another child's failure)."""
        self.conn.close()
        if not finished and self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
