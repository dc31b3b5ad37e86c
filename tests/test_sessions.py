"""Every engine's session is freed once closed and dropped, after synchronous calls or requests
in flight: a session still reachable after its measurement (OpenVINO's requests held their
completion callbacks, and through them the session, its compiled model and buffers) makes every
later measurement in that process hold its memory too."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest

from visionbench.data.calibration import synthetic_calibration
from visionbench.engines import SessionSpec, get_engine
from visionbench.harness.timing import TimingPlan, measure, measure_async

from conftest import ENGINE_NAMES


def _configurations() -> list[tuple[str, str, dict]]:
    """Each engine's reference configuration and its own throughput one (FP32, else INT8). Not
    the compiled PyTorch engine (its session is torch-eager's module compiled: 20 s of compiling
    here) nor TensorFlow (one function call, no requests in flight: 6 s to build here); both
    were freed the same when checked by hand."""
    out: list[tuple[str, str, dict]] = []
    for name in (n for n in ENGINE_NAMES if n not in ("torch", "tensorflow")):
        out.append((name, "fp32", {}))
        for precision in ("fp32", "int8"):
            options, _ = get_engine(name).own_method("throughput", precision, 2)
            if options:
                out.append((name, precision, options))
                break
    return out


@pytest.mark.parametrize(("engine_name", "precision", "options"), _configurations(),
                         ids=lambda v: v if isinstance(v, str) else ",".join(map(str, v.items())))
def test_a_closed_session_is_freed(engine_name, precision, options, tiny):
    session = get_engine(engine_name).prepare(SessionSpec(tiny, precision, 2,
                                                          synthetic_calibration(tiny, 32), 4, options))
    batch = np.random.default_rng(0).standard_normal(tiny.input_shape(4), dtype=np.float32)
    inputs = [session.feed(batch)]
    plan = TimingPlan(batch_size=4, warmup=1, repeats=1, iterations=4)
    if session.requests > 1:
        timing = measure_async(session.start, session.requests, inputs, plan)
    else:
        timing = measure(session.run, inputs, plan)
    assert timing.windows[0].images == 16
    session.close()
    freed = weakref.ref(session)
    del session, inputs
    # Freed once dropped, without the collector: the next measurement is prepared right after.
    assert freed() is None, gc.get_referrers(freed())


_FREE_WHILE_BUSY = """
import numpy as np
from visionbench.data.calibration import synthetic_calibration
from visionbench.engines import SessionSpec, get_engine
from visionbench.harness.timing import TimingPlan, measure_async
from visionbench.models import resolve

tiny = resolve("resnet50-tiny")
engine, cal = get_engine("openvino"), synthetic_calibration(tiny, 8)
x = np.random.default_rng(0).standard_normal(tiny.input_shape(4), dtype=np.float32)
for i in range({cycles}):
    options = {{"streams": 1 + i % 2, "requests": 2 + 2 * (i // 2 % 2)}}
    s = engine.prepare(SessionSpec(tiny, "fp32", 2, cal, 4, options))
    measure_async(s.start, s.requests, [s.feed(x)], TimingPlan(4, 1, 1, iterations=6))
    s.close()
    del s  # the compiled model is freed here, with the GIL held, joining OpenVINO's stream threads
"""


@pytest.mark.skipif("openvino" not in ENGINE_NAMES, reason="OpenVINO is not installed")
def test_openvino_sessions_freed_on_a_busy_cpu_never_hang(tiny):
    """A session freed right after its requests complete, while another process keeps a core
    busy: a Python completion callback on an infer request made freeing it wait for ever (a
    stream thread took the GIL to free the callback's last copy after ``wait()`` had returned,
    while the main thread, holding the GIL, joined that thread): this test hung in 3 runs of 3."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        proc = subprocess.run([sys.executable, "-c", _FREE_WHILE_BUSY.format(cycles=20)],
                              capture_output=True, text=True, timeout=120, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        pytest.fail("freeing OpenVINO sessions hung: 20 cycles did not end within 120 s")
    finally:
        busy.kill()
        busy.wait()
    assert proc.returncode == 0, proc.stderr
