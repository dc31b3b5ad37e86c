"""A launched process: ``python -m visionbench.launch.child FD [CPUS]``. It pins itself to CPUS
before importing anything else, checks that the libraries it was started with preloaded are in
use (``environment.verify``), reads its target (``module:function``) and payload from the
connection FD, and calls ``target(conn, payload)``; the target sends its messages
(``launch.protocol``). An error of the target's is sent as one line (``Failed``); ``Done`` ends a
child whose target returned. Ctrl-C belongs to the parent, which stops its children."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def resolve(target: str) -> Callable[..., Any]:
    """The function a ``module:function`` target names, its module imported."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(argv) > 1:
        os.sched_setaffinity(0, [int(c) for c in argv[1].split(",")])  # before any thread pool
    from multiprocessing.connection import Connection

    from visionbench.errors import describe
    from visionbench.launch.environment import verify
    from visionbench.launch.protocol import Done, Failed

    conn = Connection(int(argv[0]))
    try:
        try:
            target, payload = conn.recv()
            verify()  # the environment it was started with took effect, or nothing runs
            resolve(target)(conn, payload)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return 1  # the parent is gone: nobody to tell
        except Exception as e:
            conn.send(Failed(describe(e)))
            return 1
        conn.send(Done())
    except (BrokenPipeError, ConnectionResetError):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
