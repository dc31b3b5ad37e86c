"""Ray's runtime_env for every node's task, read from the user's JSON file (no Ray needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visionbench.errors import VisionbenchError


def read_runtime_env(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        env = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # unreadable, not UTF-8, not JSON, too deep
        raise VisionbenchError(f"--runtime-env {path} is not a readable JSON file: {e}") from None
    if not isinstance(env, dict):
        raise VisionbenchError(f"--runtime-env {path} must hold a JSON object (Ray's runtime_env)")
    return env
