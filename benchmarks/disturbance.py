"""A busy loop pinned to one measured core for a while in the middle of ``visionbench run``,
against quiet runs of the same command, in alternating rounds (quiet, then disturbed): whether
every window the loop touched is named with its pid and measured again, whether any figure is
left disturbed, and whether each figure of the disturbed run lies within the min-max of the quiet
runs. With ``--tree`` another source tree runs the disturbed runs instead (today's main before
the watcher): the same loop shows the error it publishes silently.

    python benchmarks/disturbance.py --rounds 5 --busy 30 [--tree DIR] [-- RUN ARGS...]

The loop is a process of its own (its parent exits at once), not visionbench's, started when
the quiet run of the round had reached its middle (less half the loop). A warm-up run first fills
the caches (model export, INT8 quantization) so that no round pays for them."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARGS = ["--precision", "fp32,int8", "--method", "reference"]


def busy_loop(cpu: int, seconds: float) -> int:
    """A CPU-bound process pinned to ``cpu`` for ``seconds``, orphaned at once; its pid."""
    code = f"import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass"
    out = subprocess.run(["sh", "-c", f"taskset -c {cpu} {sys.executable} -c '{code}' "
                          ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True)
    return int(out.stdout)


def run(tree: Path, args: list[str], busy: tuple[float, float, int] | None = None
        ) -> tuple[float, dict[str, Any], int | None]:
    """Wall seconds of one run, its results, and the busy loop's pid (``busy``: start it after
    this many seconds, for this many, on this CPU)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "visionbench", "run", *args, "--output",
                                 str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env)
        pid = None
        if busy is not None:
            at, seconds, cpu = busy
            while proc.poll() is None and time.monotonic() - t0 < at:
                time.sleep(0.1)
            pid = busy_loop(cpu, seconds) if proc.poll() is None else None
        _, err = proc.communicate()
        wall = time.monotonic() - t0
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.returncode != 0:
            raise SystemExit(f"{tree}: visionbench failed: {err.strip()[-500:]}")
        return wall, json.loads((out / "results.json").read_text()), pid


def figure(m: dict[str, Any]) -> float:
    return m["throughput_ips"] if m["mode"] == "throughput" else m["latency"]["p50_ms"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--busy", type=float, default=30.0, help="seconds the loop runs")
    p.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                   help="the CPU the loop is pinned to")
    p.add_argument("--tree", type=Path, default=ROOT, help="the tree the disturbed runs use")
    p.add_argument("args", nargs="*", help="visionbench run's arguments (after --) "
                   f"[default: {' '.join(DEFAULT_ARGS)}]")
    opts = p.parse_args()
    args = opts.args or DEFAULT_ARGS
    wall, _, _ = run(ROOT, [*args, "--iterations", "1", "--repeats", "1", "--warmup", "0"])
    print(f"warm-up: {wall:.0f} s; command: visionbench run {' '.join(args)}", flush=True)
    quiet: dict[str, list[float]] = {}
    rows = []
    for i in range(opts.rounds):
        wall_q, rq, _ = run(ROOT, args)
        for m in rq["measurements"]:
            if m["status"] == "ok":
                quiet.setdefault(m["id"], []).append(figure(m))
        at = max(wall_q / 2 - opts.busy / 2, 0.0)
        wall_d, rd, pid = run(opts.tree, args, (at, opts.busy, opts.cpu))
        named = redone = left = 0
        for m in rd["measurements"]:
            windows = m.get("windows") or []
            hit = [w for w in windows if w.get("disturbed")]
            named += sum(any(c["pid"] == pid for c in w.get("top", [])) for w in hit)
            redone += len(hit)
            left += bool(m.get("disturbed"))
            rows.append((i + 1, m["id"], figure(m), len(hit), m.get("disturbed")))
        quiet_hit = sum(bool(w.get("disturbed")) for m in rq["measurements"]
                        for w in m.get("windows") or [])
        print(f"round {i + 1}: quiet {wall_q:.0f} s ({quiet_hit} windows disturbed); "
              f"disturbed {wall_d:.0f} s, loop pid {pid} from {at:.0f} s for {opts.busy:.0f} s: "
              f"{redone} windows disturbed, {named} of them naming the loop's pid, "
              f"{left} figures left disturbed", flush=True)
    print("\nmeasurement: quiet min-max (rounds) | disturbed run's figure, windows set aside, "
          "within the quiet min-max")
    outside = 0
    for rnd, mid, value, hit, left in rows:
        lo, hi = min(quiet[mid]), max(quiet[mid])
        inside = lo <= value <= hi
        outside += not inside
        print(f"  round {rnd} {mid}: {lo:.2f}-{hi:.2f} | {value:.2f}, {hit} set aside"
              f"{', LEFT DISTURBED' if left else ''}, {'within' if inside else 'OUTSIDE'}")
    print(f"\n{len(rows) - outside} of {len(rows)} figures of the disturbed runs within the quiet "
          f"runs' min-max ({opts.tree})")


if __name__ == "__main__":
    main()
