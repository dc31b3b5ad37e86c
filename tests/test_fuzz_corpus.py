"""The fuzzing regression corpus: every input that once made a reader fail badly (an exception
other than one clear line, or a crash in a native library) is replayed through the same reader,
and must now end in a result or one clear line. The campaign that finds them is
benchmarks/fuzz_inputs.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from fuzz_inputs import CORPUS, TARGETS, finding_key, replay  # noqa: E402

NEEDS = {"tensorflow": "tensorflow", "keras": "tensorflow", "checkpoint": "torch",
         "user_conf": "mlperf_loadgen"}
CASES = sorted((d.name, f) for d in CORPUS.iterdir() if d.is_dir() for f in d.iterdir()) \
    if CORPUS.is_dir() else []


def test_the_corpus_names_known_targets():
    assert {target for target, _ in CASES} <= set(TARGETS)


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{t}/{p.name}" for t, p in CASES])
def test_a_once_failing_input_now_ends_in_a_result_or_one_line(target: str, path: Path):
    module = NEEDS.get(target)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed")
    e = replay(target, path.read_bytes())
    assert e is None, f"{finding_key(e)}: {e}"
