"""Shared fixtures: a private model cache, the tiny model, the engines."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from visionbench.engines import all_engines

ENGINE_NAMES = [n for n, cls in all_engines().items() if cls.installed()]
#: Engines that run any ONNX file (the torch and tensorflow engines run ResNet-50 v1.5 weights
#: only, rebuilt in their own framework).
ONNX_ENGINES = [n for n in ENGINE_NAMES if not n.startswith("torch") and n != "tensorflow"]


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models and INT8 files are cached per test session (or in $VISIONBENCH_TEST_CACHE)."""
    path = Path(os.environ.get("VISIONBENCH_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["VISIONBENCH_CACHE"] = str(path)
    return path


TINY = ["--model", "resnet50-tiny", "--calibration-samples", "32"]


def vb(*args: str, timeout: float = 300, wrap: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, in a fresh process (under the command ``wrap``, if given)."""
    return subprocess.run(
        [*wrap, sys.executable, "-m", "visionbench", *args], capture_output=True, text=True,
        timeout=timeout, env=os.environ.copy(),
    )


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A tmpfs of ``request.param`` bytes (default 128 KiB)."""
    where = tmp_path / "small"
    where.mkdir()
    size = getattr(request, "param", 128 * 1024)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, spare: int = 0) -> None:
    """Fill ``disk`` to its last byte, then free ``spare`` 4 KiB pages."""
    page = b"\0" * 4096
    with open(disk / "spare", "wb") as f:
        f.write(page * spare)
    fd = os.open(disk / "fill", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, page)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    (disk / "spare").unlink()


def leftovers(folder: Path) -> list[str]:
    """Temporary files of visionbench's under ``folder``."""
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(
        (".loadgen-", ".openvino-", ".tmp-"))]


def vb_serve(*args: str, ready: Path, env: dict[str, str] | None = None,
             timeout: float = 120) -> tuple[subprocess.Popen, dict]:
    """``visionbench serve`` started as a user starts it, once it has written its ready file:
    the process (stdout and stderr piped) and the facts it wrote."""
    proc = subprocess.Popen([sys.executable, "-m", "visionbench", "serve", *args, "--ready-file",
                             str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or os.environ.copy())
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"the server never became ready (exit {proc.returncode}): {err}")
        time.sleep(0.2)
    return proc, json.loads(ready.read_text())


def vb_many(cases: list[list[str]], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """``vb`` for each of ``cases``, two at a time (each a CLI start that refuses its input: nothing
    is timed), in their order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda args: vb(*args, timeout=timeout), cases))


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """One quick run of every installed engine on the tiny model, shared by the CLI and report tests."""
    out = tmp_path_factory.mktemp("run") / "r"
    proc = vb("run", *TINY, "--quick", "--engine", "all", "--duration", "0.3", "--output", str(out))
    return proc, out


@pytest.fixture(scope="session")
def tiny(model_cache: Path):
    from visionbench.models import resolve

    return resolve("resnet50-tiny")


@pytest.fixture(scope="session")
def tiny_inputs(tiny) -> np.ndarray:
    """Images with content (what INT8 is calibrated on and fidelity judged on)."""
    from visionbench.data.synthetic import model_images

    return model_images(tiny, 32, seed=7)


def small_onnx(path: Path, shape: list, layout: str = "NCHW", elem=None) -> Path:
    """A minimal image classifier (pool -> linear) with the given input shape and layout."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = elem or TensorProto.FLOAT
    nodes, x = [], "image"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((10, 3)).astype(np.float32), "w")
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["out"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("image", elem, shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [shape[0], 10])], [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """Sets the fake engine's settings (``Settings`` fields) for this test and its workers."""

    def settings(**values: object) -> None:
        monkeypatch.setenv("VISIONBENCH_FAKE_ENGINE", json.dumps(values))

    settings()
    return settings
