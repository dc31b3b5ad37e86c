"""Fuzz every input visionbench reads from a user, with atheris (libFuzzer's mutations, coverage
of visionbench's own code): each input must end in a result or one clear line (a
VisionbenchError), never another exception and never a crash.

    pip install atheris
    python benchmarks/fuzz_inputs.py [--runs 20000] [--target onnx,image,...] [--seconds 60]

Each target runs in its own process from a seed corpus (valid files written here); the inputs
tried, the distinct findings (exception type and the line that raised it) and any crash are
printed per target. An input that runs longer than ``TIMEOUT`` seconds is a finding (a hang).
The results-file targets (results, fleet) first take every extreme value (``EXTREMES``) at every
number of a valid file, in order, then libFuzzer's mutations. The ``options`` target is the
command line's option grammar (benchmarks/fuzz_grammar.py). An input that fails is saved under
tests/fixtures/fuzz/<target>/, the regression corpus tests/test_fuzz_corpus.py replays through
the same target in the normal suite.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from fuzz_grammar import Finding, Stop, options

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "fuzz"
FINDINGS = "findings.jsonl"

Target = Callable[[bytes, Path], None]


def _file(data: bytes, tmp: Path, name: str) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def onnx_model(data: bytes, tmp: Path) -> None:
    """--model FILE.onnx: read and checked as visionbench does before an engine sees it."""
    from visionbench.models import resolve

    resolve(str(_file(data, tmp, "model.onnx")))


def tensorflow_graph(data: bytes, tmp: Path) -> None:
    """--model FILE.pb: a frozen TensorFlow graph."""
    from visionbench.models import resolve

    resolve(str(_file(data, tmp, "model.pb")), threads=1)


def keras_file(data: bytes, tmp: Path) -> None:
    """--model FILE.keras: a Keras archive."""
    from visionbench.models import resolve

    resolve(str(_file(data, tmp, "model.keras")), threads=1)


def checkpoint(data: bytes, tmp: Path) -> None:
    """--weights FILE.pth: a torchvision checkpoint."""
    from visionbench.models import resolve

    resolve(weights=_file(data, tmp, "weights.pth"))


def image(data: bytes, tmp: Path) -> None:
    """--data DIR: every image decoded as the run decodes them (unreadable ones are skipped)."""
    from visionbench.data.images import decoded, open_dataset

    for suffix in (".jpg", ".png"):
        _file(data, tmp, f"img{suffix}")
    dataset = open_dataset(tmp)
    for _ in decoded(dataset):
        pass


def labels(data: bytes, tmp: Path) -> None:
    """--labels FILE: 'filename label' lines."""
    from visionbench.data.images import open_dataset

    open_dataset(tmp, _file(data, tmp, "labels.txt"))


def image_list(data: bytes, tmp: Path) -> None:
    """--calibration-data LIST: MLPerf's calibration image list."""
    from visionbench.data.calibration import calibration
    from visionbench.models import resolve

    model = resolve("resnet50-tiny")
    calibration(model, 4, _file(data, tmp, "cal_list.txt"), None, set())


def user_conf(data: bytes, tmp: Path) -> None:
    """mlperf --user-conf FILE: read by LoadGen's own parser, after visionbench's checks."""
    from visionbench.scenarios.mlperf.settings import check_user_conf

    check_user_conf(_file(data, tmp, "user.conf"))


def _no_debris(tmp: Path) -> None:
    """No temporary file left behind (an atomic write's ``.NAME.*.tmp``, ours or others')."""
    if debris := sorted(p.name for p in tmp.rglob("*") if p.name.endswith((".tmp", "-tmp"))):
        raise Finding("temporary files left", ", ".join(debris[:5]))


def _stop(*_: object, **__: object) -> None:
    raise Stop


def results_json(data: bytes, tmp: Path) -> None:
    """show, compare, report and resume RUN: results.json read, printed, compared (and the
    comparison written), reported, and loaded and planned again by resume (stopped before it
    measures); no temporary file left, whatever happens."""
    from rich.console import Console

    from visionbench import api
    from visionbench.reporting.console import print_summary

    run = tmp / "run"
    shutil.copytree(ROOT / "tests" / "fixtures" / "run-0.1.0" / "raw", run / "raw")
    _file(data, run, "results.json")
    try:
        results = api.load(run)
        print_summary(Console(file=io.StringIO(), width=140), results)
        api.write_comparison(api.compare([run, run]), tmp / "compare")
        api.report(results)
        with mock.patch("visionbench.scenarios.study.run", _stop):
            api.resume(run)
    except Stop:
        pass
    finally:
        _no_debris(tmp)


def fleet_json(data: bytes, tmp: Path) -> None:
    """show, report and resume of a fleet run: fleet.json (beside two nodes' runs) read,
    summarised, printed and reported; resume refuses it."""
    from rich.console import Console

    from visionbench import api
    from visionbench.cli.tables import print_fleet

    fleet = tmp / "fleet"
    for node in ("a", "b"):
        shutil.copytree(ROOT / "tests" / "fixtures" / "run-0.1.0", fleet / "nodes" / node)
    _file(data, fleet, "fleet.json")
    try:
        summary = api.fleet_summary(fleet)
        print_fleet(Console(file=io.StringIO(), width=140), summary)
        api.report_fleet(summary)
        api.resume(fleet)
    finally:
        _no_debris(tmp)


def runtime_env(data: bytes, tmp: Path) -> None:
    """fleet --runtime-env FILE: Ray's runtime_env as JSON."""
    from visionbench.ray_fleet.env import read_runtime_env

    read_runtime_env(_file(data, tmp, "env.json"))


TARGETS: dict[str, Target] = {
    "onnx": onnx_model, "tensorflow": tensorflow_graph, "keras": keras_file,
    "checkpoint": checkpoint, "image": image, "labels": labels, "image_list": image_list,
    "user_conf": user_conf, "results": results_json, "runtime_env": runtime_env,
    "fleet": fleet_json, "options": options,
}
#: Inputs per run of the slower targets (a TensorFlow import, a report's figures per input).
SLOW = {"results": 0.1, "fleet": 0.1, "tensorflow": 0.5, "keras": 0.5, "checkpoint": 0.5}
#: Seconds an input may take before it counts as a hang.
TIMEOUT = 20


def replay(target: str, data: bytes) -> BaseException | None:
    """Run one input through a target in a fresh folder: None, or what went wrong (anything but
    a VisionbenchError is wrong)."""
    from visionbench.errors import VisionbenchError

    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        try:
            TARGETS[target](data, Path(tmp))
        except VisionbenchError:
            return None
        except Exception as e:
            return e
        finally:
            os.chdir(cwd)
    return None


def finding_key(e: BaseException) -> str:
    """The exception type and the deepest frame in visionbench (or the last one) that raised it;
    for a check of the command line's (``Finding``), which check on which command."""
    if isinstance(e, Finding):
        return e.key
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "visionbench" in f.filename and "fuzz_inputs" not in f.filename]
    f = (ours or frames)[-1]
    return f"{type(e).__name__} at {Path(f.filename).name}:{f.lineno}"


#: Spliced in, where a value is this string, as 100,000 nested lists.
DEEP = "__deep__"
#: Values no visionbench writes, each put at every number of a valid results file: non-finite
#: (JSON's literals and as strings), extreme, huge, deeply nested.
EXTREMES: list[Any] = [float("nan"), float("inf"), float("-inf"), "NaN", "Infinity", "-Infinity",
                       "1e999", 1e308, -1e308, 5e-324, -0.0, 2**63, 2**1024, -(2**1024),
                       "x" * 100_000, DEEP]


def dump(doc: Any) -> bytes:
    """JSON as a file may hold it: NaN and Infinity as JSON's literals, ``DEEP`` spliced in."""
    return json.dumps(doc).replace(json.dumps(DEEP), "[" * 100_000 + "]" * 100_000).encode()


def _numbers(doc: Any, path: tuple = ()) -> Iterator[tuple]:
    """The path (keys and indices) of every number in ``doc``."""
    if isinstance(doc, dict | list):
        for k, v in (doc.items() if isinstance(doc, dict) else enumerate(doc)):
            yield from _numbers(v, (*path, k))
    elif isinstance(doc, int | float) and not isinstance(doc, bool):
        yield path


def extremes(seed: bytes) -> Iterator[bytes]:
    """Every value of ``EXTREMES`` at every number of the JSON document ``seed``, one at a time."""
    doc = json.loads(seed)
    for path in list(_numbers(doc)):
        node = doc
        for k in path[:-1]:
            node = node[k]
        was = node[path[-1]]
        for value in EXTREMES:
            node[path[-1]] = value
            yield dump(doc)
        node[path[-1]] = was


def json_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Mutate a JSON document by its structure (a value replaced by another of any type or an
    extreme one, a key dropped or added), so that inputs get past the JSON parser into what
    reads the document; bytes that are not JSON get libFuzzer's own mutations."""
    import random

    import atheris

    rng = random.Random(seed)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return atheris.Mutate(data, max_size)
    for _ in range(rng.randint(1, 4)):
        node, key = doc, None
        while isinstance(node, (dict, list)) and node:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            child = node[key]
            if not isinstance(child, (dict, list)) or not child or rng.random() < 0.3:
                break
            node, key = child, None
        if key is None:
            continue
        choice = rng.random()
        if choice < 0.15 and isinstance(node, dict):
            node.pop(key, None)
        elif choice < 0.25 and isinstance(node, dict):
            node[f"x{rng.randrange(99)}"] = rng.choice([None, 1, "x", [], {}])
        else:
            node[key] = rng.choice([None, True, 0, -1, "", "x" * 50, [], {}, [1, 2], {"a": 1},
                                    "2026-13-45", -1e-300, *EXTREMES])
    out = dump(doc)
    return out if len(out) <= max_size else data


#: Targets whose inputs are JSON, mutated by their structure.
JSON_TARGETS = {"results", "runtime_env", "fleet"}
#: Targets whose seed first gets every extreme value at every number (``extremes``).
SWEPT = {"results", "fleet"}


# --- seeds: one valid file per target --------------------------------------------------------

def seeds(target: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import small_onnx

    if target == "onnx":
        small_onnx(out / "seed", ["N", 3, 32, 32])
    elif target in ("tensorflow", "keras"):
        from visionbench.models.tensorflow_files import import_tensorflow

        tf = import_tensorflow()
        model = tf.keras.Sequential([tf.keras.Input((32, 32, 3)), tf.keras.layers.Conv2D(4, 3),
                                     tf.keras.layers.GlobalAveragePooling2D(),
                                     tf.keras.layers.Dense(10)])
        if target == "keras":
            model.save(out / "seed.keras")
        else:
            from visionbench.models.tensorflow_files import freeze

            frozen = freeze(tf, model, (None, 32, 32, 3), "input", "output")
            (out / "seed").write_bytes(frozen.graph_def.SerializeToString())
    elif target == "checkpoint":
        import torch

        torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(10)},
                   out / "seed")
    elif target == "image":
        from PIL import Image
        from skimage import data

        for name, arr in (("astronaut", data.astronaut()), ("camera", data.camera())):
            for fmt in ("JPEG", "PNG"):
                buf = io.BytesIO()
                Image.fromarray(arr).resize((48, 48)).save(buf, fmt)
                (out / f"{name}.{fmt.lower()}").write_bytes(buf.getvalue())
    elif target == "labels":
        (out / "seed").write_text("a.jpg 1\nb.png 0\n# comment\n\n")
    elif target == "image_list":
        (out / "seed").write_text("a.jpg\nsub/b.png 3\n")
    elif target == "user_conf":
        (out / "seed").write_text("resnet50.Offline.target_qps = 100\n"
                                  "*.SingleStream.target_latency = 10\n"
                                  "resnet50.Server.min_duration = 1000\n")
    elif target == "results":
        shutil.copy(ROOT / "tests" / "fixtures" / "run-0.1.0" / "results.json", out / "seed")
    elif target == "runtime_env":
        (out / "seed").write_text(json.dumps({"pip": ["numpy"], "env_vars": {"A": "1"}}))
    elif target == "fleet":
        (out / "seed").write_text(fleet_seed())
    elif target == "options":
        for i in range(64):  # each command, with a few options and values
            (out / f"seed{i}").write_bytes(bytes([i % 6, (i * 7) % 12, *range(i, i + 24)]))


def fleet_seed() -> str:
    """A finished fleet run's fleet.json, of two nodes (nodes/a, nodes/b)."""
    from visionbench.results.fleet import FleetNode, FleetResults

    nodes = [FleetNode(name=n, node_id=f"{n}" * 8, hostname=n, address=f"10.0.0.{i}", cpus=2.0,
                       resources={"CPU": 2.0}, status="complete", dir=f"nodes/{n}",
                       measurements=4, started_at="2026-12-02T10:00:00", seconds=12.5)
             for i, n in enumerate("ab")]
    return FleetResults(created_at="2026-12-02T10:00:00", finished_at="2026-12-02T10:01:00",
                        status="complete", command=["visionbench", "fleet"], address="auto",
                        mode="sequential", node_timeout=600.0, nodes=nodes,
                        driver={"hostname": "a", "versions": {"visionbench": "0.3.0"},
                                "ray": "2.40.0"}).model_dump_json()


# --- one target's campaign, in this process -------------------------------------------------

def fuzz_one(target: str, runs: int, seconds: int, work: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["visionbench"]):
        from visionbench import api, cli  # noqa: F401
    findings = work / FINDINGS
    seen: set[str] = set()
    tmp_root = Path(tempfile.mkdtemp(prefix="fuzz-"))

    def one(data: bytes) -> None:
        e = replay(target, data)
        if e is None:
            return
        key = finding_key(e)
        if key not in seen:
            seen.add(key)
            with findings.open("a") as f:
                f.write(json.dumps({"key": key, "message": str(e)[:300],
                                    "input": data.hex()}) + "\n")

    os.chdir(tmp_root)  # libFuzzer writes crash-* files into the working directory
    corpus = work / "corpus"
    swept = work / "swept"
    if target in SWEPT and not swept.exists():  # once, before libFuzzer's mutations
        swept.write_text(str(sweep(target, corpus / "seed", one)))
    max_len = 1 << 20 if target in ("results", "image", "tensorflow", "keras", "checkpoint",
                                    "fleet") else 4096
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-max_total_time={seconds}",
                   f"-max_len={max_len}", f"-timeout={TIMEOUT}", "-print_final_stats=1",
                   f"-artifact_prefix={work}/", str(corpus)], one,
                  custom_mutator=json_mutator if target in JSON_TARGETS else None)
    atheris.Fuzz()


class Hang(Exception):
    """An input of the sweep ran past ``TIMEOUT``."""


def sweep(target: str, seed: Path, one: Callable[[bytes], None]) -> int:
    """Every extreme value at every number of ``seed`` through ``one``, each within ``TIMEOUT``
    (a hang is a finding); how many inputs."""
    def hang(signum: int, frame: object) -> None:
        raise Hang(f"an input ran past {TIMEOUT} s")

    before = signal.signal(signal.SIGALRM, hang)
    n = 0
    try:
        for data in extremes(seed.read_bytes()):
            signal.alarm(TIMEOUT)
            try:
                one(data)
            finally:
                signal.alarm(0)
            n += 1
    finally:  # libFuzzer's own -timeout sets SIGALRM's handler only where none is set
        signal.signal(signal.SIGALRM, before)
    return n


# --- the driver ------------------------------------------------------------------------------

def campaign(target: str, runs: int, seconds: int) -> dict:
    """Run one target's campaign in a child process; restart it past native crashes."""
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    seeds(target, work / "corpus")
    tried, crashes = 0, []
    for _ in range(5):  # a native crash ends the child: note it, set the input aside, go on
        proc = subprocess.run(
            [sys.executable, __file__, "--child", target, "--runs", str(runs - tried),
             "--seconds", str(seconds), "--work", str(work)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        done = [int(n) for n in re.findall(r"stat::number_of_executed_units:\s+(\d+)", proc.stderr)]
        tried += done[-1] if done else 0
        crash = sorted(work.glob("crash-*")) + sorted(work.glob("oom-*")) + \
            sorted(work.glob("timeout-*"))
        if proc.returncode == 0 or not crash:
            if proc.returncode != 0:
                crashes.append({"key": f"exit {proc.returncode}", "tail": proc.stderr[-500:]})
            break
        for c in crash:
            tail = proc.stderr.strip().splitlines()[-30:]
            crashes.append({"key": f"{c.name.split('-')[0]}: " + next(
                (line for line in tail if "ERROR" in line or "Fatal" in line), tail[-1] if tail
                else "?"), "input": c.read_bytes().hex()})
            c.unlink()
        if tried >= runs:
            break
    findings = [json.loads(line) for line in (work / FINDINGS).read_text().splitlines()] \
        if (work / FINDINGS).exists() else []
    swept = int((work / "swept").read_text()) if (work / "swept").exists() else 0
    for f in findings + crashes:
        if "input" in f:
            data = bytes.fromhex(f["input"])
            dest = CORPUS / target / hashlib.sha256(data).hexdigest()[:16]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    shutil.rmtree(work, ignore_errors=True)
    return {"target": target, "swept": swept, "inputs": tried, "findings": findings,
            "crashes": crashes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default=",".join(TARGETS))
    ap.add_argument("--runs", type=int, default=20000, help="inputs per target (fewer for slow ones)")
    ap.add_argument("--seconds", type=int, default=60, help="at most this long per target")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fuzz_one(args.child, args.runs, args.seconds, args.work)
        return
    print(f"{'target':12} {'swept':>6} {'inputs':>7} {'findings':>8} {'crashes':>7}")
    for target in args.target.split(","):
        runs = max(int(args.runs * SLOW.get(target, 1.0)), 10)
        r = campaign(target, runs, args.seconds)
        print(f"{target:12} {r['swept']:6d} {r['inputs']:7d} {len(r['findings']):8d} "
              f"{len(r['crashes']):7d}", flush=True)
        for f in r["findings"] + r["crashes"]:
            print(f"    {f['key']}: {f.get('message', f.get('tail', ''))[:160]}")


if __name__ == "__main__":
    main()
