"""The command line's option grammar as a fuzz target (benchmarks/fuzz_inputs.py, target
``options``): an input's bytes decode, deterministically, into one command line of ``run``
(always with ``--dry-run``), ``compare``, ``export``, ``show``, ``report`` or ``cache``, made of
the command's real options (from its click definition) with extreme, empty, huge or non-UTF-8
values, repeated, misplaced and unknown options. The line runs in this process as
``visionbench`` runs it (``cli.running.run``: the UTF-8 check, click's parse, the options'
validation, the output folder's policy), in a sandbox folder that is its working directory and
its cache (``VISIONBENCH_CACHE``) and holds a run, an empty folder, a file, a FIFO and a link.

It must end in exit 0, 1 or 2 with at most one line on stderr, never another exception, and leave
the sandbox as it was. Nothing is measured or built: ``run`` plans only (``--dry-run``), and the
documented stops below end the other commands where they would start writing or building (the
output's policy is checked before them): ``compare`` before it writes the comparison, ``report``
before it writes the figures and pages, ``export`` before it builds the model. A stop is a pass."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("run", "compare", "export", "show", "report", "cache")
#: The sandbox's own things, named in command lines by these words.
PLACES = ("RUN", "EMPTY", "FILE", "FIFO", "LINK", "NEW", "NEW/deeper", "CACHE")
VALUES = (
    "", " ", "0", "-0", "1", "-1", "2", "3", "1.5", "1e9", "1e10", "1e308", "-1e308", "1e999",
    "5e-324", "inf", "-inf", "nan", "NaN", "Infinity", "0x10", "1_000", "9223372036854775808",
    "18446744073709551616", "4294967296", "99999999999999999999999999999999999999", "1" * 400,
    "x" * 5000, "é" * 300, "all", "ALL", "none", ",", ",,", " , ", "fp32", "bf16", "int8",
    "int8,bf16,fp32", "fp32,fp32", "onnxruntime", "openvino", "onnxruntime,onnxruntime", "torch",
    "throughput", "latency", "cold", "latency,cold", "reference", "engine", "reference,engine",
    "resnet50", "resnet50-tiny", "nosuchmodel", "1,3,224,224", "3,-1,0", "1x3x224x224",
    "throughput", "measurement", "engine", "10m", "-5s", "1h", "true", "false", "--", "-",
    "--output", "-h", "\n", "a\nb", "\t", "\x1b[31mred", "\r", "\u202e", "\ufeff", "%s%n",
    "{x}", "[red]x[/]", "$HOME", "~", ".", "./", "results", *PLACES,
)
UNKNOWN = ("--nope", "--engine-x", "--outputs", "-x", "--", "-", "--dry-run", "--append",
           "--overwrite", "--yes", "--clear", "--help", "--version", "---", "--=", "-vvv")


class Stop(Exception):
    """A documented stop: the command got past its parse, validation and output check, to where
    it would write or build."""


class Finding(Exception):
    """The command line ended badly: a wrong exit code, more than one line on stderr, a
    traceback, or the sandbox changed. ``key`` says which check, on which command."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(detail)
        self.key = key


class Bytes:
    """A fuzz input read from the front: small choices, and slices of the rest."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        if self.at >= len(self.data):
            return 0
        self.at += 1
        return self.data[self.at - 1]

    def pick(self, seq: tuple | list) -> object:
        return seq[self.byte() % len(seq)] if seq else ""

    def text(self) -> str:
        """Up to 64 of the input's bytes as an argument, as the OS hands them over (not UTF-8:
        surrogate escapes). No NUL, which no argument can hold; no '/' or '..', which would
        reach outside the sandbox."""
        n = self.byte() % 65
        raw = self.data[self.at:self.at + n].replace(b"\0", b"").replace(b"/", b"_")
        self.at += n
        return os.fsdecode(raw).replace("..", "__")


def _params(command: str) -> tuple[list[tuple[str, bool]], int]:
    """The command's options (each flag name, and whether it is a switch) and how many
    positional arguments it takes (-1: any)."""
    import click

    from visionbench.cli.main import cli

    cmd = cli.commands[command]
    opts: list[tuple[str, bool]] = [("--help", True)]
    positional = 0
    for p in cmd.params:
        if isinstance(p, click.Option):
            opts += [(name, p.is_flag) for name in (*p.opts, *p.secondary_opts)]
        else:
            positional = -1 if p.nargs == -1 else positional + p.nargs
    return opts, positional


def argv(data: bytes, sandbox: Path) -> list[str]:
    """The command line an input decodes into."""
    b = Bytes(data)
    command = str(b.pick(COMMANDS))
    opts, _ = _params(command)
    args = [command, "--dry-run"] if command == "run" else [command]

    def value() -> str:
        choice = b.byte() % 8
        if choice < 5:
            v = str(b.pick(VALUES))
        elif choice < 7:
            v = b.text()
        else:
            v = str(b.pick(VALUES)) + b.text()
        return str(sandbox / v) if v.split("/")[0] in PLACES else v

    for _ in range(b.byte() % 12):
        kind = b.byte() % 16
        if kind < 10:
            name, is_flag = b.pick(opts)  # type: ignore[misc]
            if is_flag:
                args.append(name)
            elif b.byte() % 4 == 0:
                args.append(f"{name}={value()}")
            else:
                args += [name, value()]
        elif kind < 12:
            args.append(value())
        elif kind < 14:
            args.append(str(b.pick(UNKNOWN)))
        else:
            args.append(b.text())
    return args


def make_sandbox(tmp: Path) -> Path:
    """A working folder holding the places a command line may name, and an empty cache."""
    box = tmp / "box"
    box.mkdir()
    shutil.copytree(ROOT / "tests" / "fixtures" / "run-0.1.0", box / "RUN")
    (box / "EMPTY").mkdir()
    (box / "FILE").write_text("the user's own file\n")
    os.mkfifo(box / "FIFO")
    (box / "RUN" / ".visionbench.lock").touch()  # a run's lock stays once it was opened
    (box / "LINK").symlink_to(box / "RUN")
    (box / "CACHE").mkdir(mode=0o700)
    return box


def snapshot(box: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``box`` with its type, size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(box):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(box))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@contextlib.contextmanager
def _stops() -> Iterator[None]:
    """Nothing measured, built or written past the output's check (see the module's doc)."""
    def stop(*_: object, **__: object) -> None:
        raise Stop

    with mock.patch("visionbench.scenarios.study.run", stop), \
            mock.patch("visionbench.models.build_builtin", stop), \
            mock.patch("visionbench.models.from_checkpoint", stop), \
            mock.patch("visionbench.reporting.comparison.write_comparison", stop), \
            mock.patch("visionbench.reporting.write_report", stop):
        yield


def run_line(args: list[str], box: Path) -> tuple[int, str, str]:
    """``visionbench ARGS`` run in this process as the command runs it, in ``box``: the exit
    code, stdout and stderr (a Stop propagates)."""
    from visionbench.cli.main import cli
    from visionbench.cli.running import run

    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    saved = sys.argv, sys.stdin, os.environ.get("VISIONBENCH_CACHE"), os.getcwd()
    sys.argv, sys.stdin = ["visionbench", *args], io.StringIO()
    os.environ["VISIONBENCH_CACHE"] = str(box / "CACHE")
    os.chdir(box)
    code: object = 0
    try:
        with _stops(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run(cli)
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv, sys.stdin = saved[0], saved[1]
        if saved[2] is None:
            os.environ.pop("VISIONBENCH_CACHE", None)
        else:
            os.environ["VISIONBENCH_CACHE"] = saved[2]
        os.chdir(saved[3])
        for s, h in handlers.items():
            signal.signal(s, h)
    return (code if isinstance(code, int) else 0 if code is None else -1), out.getvalue(), \
        err.getvalue()


#: The run's lock (``report`` takes it, writing who holds it).
_KEPT = ("RUN/.visionbench.lock",)


def options(data: bytes, tmp: Path) -> None:
    """One command line: exit 0, 1 or 2, at most one line on stderr, the sandbox unchanged."""
    box = make_sandbox(tmp)
    before = snapshot(box)
    args = argv(data, box)
    try:
        code, _, err = run_line(args, box)
    except Stop:
        code, err = 0, ""
    lines = err.splitlines()
    if code not in (0, 1, 2):
        raise Finding(f"exit {code} ({args[0]})", f"{args!a}: {err[-300:]!a}")
    if len(lines) > 1 or "Traceback" in err:
        raise Finding(f"stderr of {len(lines)} lines ({args[0]})", f"{args!a}: {err[:300]!a}")
    if code != 0 and not lines:
        raise Finding(f"exit {code}, stderr empty ({args[0]})", f"{args!a}")
    after = snapshot(box)
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and k not in _KEPT)
    if changed:
        raise Finding(f"sandbox changed ({args[0]})", f"{args!a} left {changed[:5]}")
