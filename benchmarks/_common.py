"""Helpers shared by the benchmark scripts (not a test; they print measured figures)."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The served benchmarks pin the server to one core and the load generator to the other.
SERVER_CORE, CLIENT_CORE = "0", "1"


def visionbench_run(*args: str) -> dict:
    """Run ``visionbench run`` in a subprocess, as a user would; return its results.json."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "visionbench", "run", *args, "--output", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"visionbench failed: {proc.stderr.strip()}")
        return json.loads((out / "results.json").read_text())


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{median(values):.2f} [{lo:.2f}-{hi:.2f}]"


def pinned(core: str, *args: str) -> list[str]:
    """``visionbench ARGS`` pinned to ``core``."""
    return ["taskset", "-c", core, sys.executable, "-m", "visionbench", *args]


@contextmanager
def served(*args: str) -> Iterator[dict]:
    """``visionbench serve ARGS`` on SERVER_CORE, once it listens: the facts of its ready file;
    stopped with SIGTERM after."""
    tmp = Path(tempfile.mkdtemp(prefix="served-"))
    facts, log = tmp / "server.json", tmp / "stderr.txt"
    with log.open("w") as err:
        server = subprocess.Popen(pinned(SERVER_CORE, "serve", *args, "--ready-file", str(facts)),
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        while not facts.exists():
            if server.poll() is not None:
                raise SystemExit(f"serve failed: {log.read_text().strip()}")
            time.sleep(0.2)
        yield json.loads(facts.read_text()) | {"ready_file": str(facts)}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
