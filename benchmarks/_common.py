"""Helpers shared by the benchmark scripts (not a test; they print measured figures)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


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
