"""visionbench's own processes (``launch``) never re-run the caller's code: the README's API
example works as a script without a main guard, as ``python -m``, from stdin, from ``-c`` and
in a notebook-like ``exec``. And the launcher's pieces on their own: environment, affinity,
messages, and why a child ended."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from visionbench.launch.process import Child, ChildDied, Launch, explain
from visionbench.launch.protocol import Done, Failed, Note, Result

ROOT = Path(__file__).resolve().parents[1]


def readme_api_block() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "visionbench.run(" in b]
    return block


NOTEBOOK = ("import sys, types; m = types.ModuleType('__main__'); sys.modules['__main__'] = m; "
            "exec(compile(open('api_example.py').read(), '<cell>', 'exec'), m.__dict__)")


def _ways(code: str, where: Path) -> dict[str, tuple[list[str], str | None]]:
    (where / "api_example.py").write_text(code)
    (where / "pkg").mkdir()
    (where / "pkg" / "__init__.py").write_text("")
    (where / "pkg" / "script.py").write_text(code)
    py = sys.executable
    return {"file": ([py, "api_example.py"], None), "module": ([py, "-m", "pkg.script"], None),
            "stdin": ([py, "-"], code), "-c": ([py, "-c", code], None),
            "notebook": ([py, "-c", NOTEBOOK], None)}


@pytest.mark.slow  # the README's example in three ways, end to end (10 s)
def test_readme_api_example_runs_as_printed_every_way(tmp_path: Path) -> None:
    """Each way runs the example once: one run, complete, with its report, and the worker (a
    fresh process per engine) never ran the example again."""
    code = readme_api_block()
    dirs = {}

    def one(name: str) -> tuple[str, subprocess.CompletedProcess]:
        where = tmp_path / name.strip("-")
        where.mkdir()
        dirs[name] = where
        args, stdin = _ways(code, where)[name]
        return name, subprocess.run(args, cwd=where, input=stdin, capture_output=True, text=True,
                                    timeout=300, env=os.environ.copy())

    names = ["file", "module", "stdin", "-c", "notebook"]
    with ThreadPoolExecutor(max_workers=2) as pool:  # functional: nothing here is judged on speed
        done = dict(pool.map(one, names))
    for name in names:
        proc = done[name]
        assert proc.returncode == 0, f"{name}: {proc.stderr[-2000:]}"
        statuses = [ln.split()[0] for ln in proc.stdout.splitlines() if ln.startswith(("complete", "failed"))]
        assert statuses == ["complete"], f"{name}: {proc.stdout}"
        (run,) = (dirs[name] / "results").iterdir()
        assert (run / "results.json").is_file() and (run / "report.html").is_file()
        assert "onnxruntime-fp32-latency" in proc.stdout and "being written" not in proc.stderr


def _echo(conn, payload) -> None:
    """A launched child: its environment variable, affinity and payload, sent back."""
    conn.send(Note(os.environ.get("VB_TEST_VAR", "")))
    conn.send(Result((sorted(os.sched_getaffinity(0)), payload)))


def _fail(conn, payload) -> None:
    raise ValueError(f"bad payload {payload}")


def _hang(conn, payload) -> None:
    import time

    conn.send(Note("up"))
    time.sleep(60)


def test_a_child_gets_its_environment_affinity_and_payload() -> None:
    cpu = sorted(os.sched_getaffinity(0))[-1]
    child = Child("test_launch:_echo", {"x": 1},
                  Launch("the echo child", env={"VB_TEST_VAR": "set"}, cpus=(cpu,)))
    try:
        assert child.recv(60) == Note("set")
        assert child.recv(60) == Result(([cpu], {"x": 1}))
        assert isinstance(child.recv(60), Done)
    finally:
        child.close()
    assert child.proc.returncode == 0


def test_a_childs_error_is_one_line_and_its_death_is_explained() -> None:
    child = Child("test_launch:_fail", 3, Launch("the failing child"))
    try:
        assert child.recv(60) == Failed("ValueError: bad payload 3")
    finally:
        child.close()
    child = Child("test_launch:_hang", None, Launch("the hanging child"))
    try:
        assert child.recv(60) == Note("up")
        with pytest.raises(ChildDied, match="the hanging child gave no answer in 0 s"):
            child.recv(0.2)
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(ChildDied, match=r"^the hanging child was killed by SIGKILL$"):
            child.recv(60)
    finally:
        child.close(finished=False)
    child = Child("no_such_module_here:main", None, Launch("the lost child"))
    try:
        assert child.recv(60) == Failed("ModuleNotFoundError: No module named 'no_such_module_here'")
    finally:
        child.close()


def test_explain_names_the_exit_and_the_last_line(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_text("starting\nRuntimeError: out of luck\n\n")
    assert explain("instance 1", 1, log) == "instance 1 exited with status 1 (RuntimeError: out of luck)"
    assert explain("the worker", -9) == "the worker was killed by SIGKILL"
    assert explain("the worker", None) == "the worker stopped answering"
