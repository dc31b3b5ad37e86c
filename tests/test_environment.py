"""The process environment as a tuning axis (``--allocator``, ``--omp-runtime``, ``--env``): the
flags checked in one line, the libraries preloaded in the worker and checked in use there (the
library serving ``malloc`` read inside it), the environment recorded, tune's environment variants
(a knob recorded as doing nothing is not searched) judged against their control, and the winner's
command carrying its environment. The allocators' Debian packages and intel-openmp are installed
by the set-up (``make system``, the ``environment`` extra); without them those tests are skipped,
except where VISIONBENCH_REQUIRE_ALLOCATORS=1 (CI), where they fail."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import visionbench
from visionbench.config import RunConfig
from visionbench.engines import get_engine
from visionbench.errors import VisionbenchError
from visionbench.launch import environment
from visionbench.launch.environment import ALLOCATOR_LIBS, Environment, intel_openmp, system_library
from visionbench.scenarios.setting import Setting, control, faster_than_control, rerun_command
from visionbench.settings import ALLOCATORS, parse_env

from conftest import vb, vb_many

FAST = {"model": "resnet50-tiny", "engines": "fake", "duration": 0.05, "repeats": 2, "warmup": 1,
        "calibration_samples": 8, "precisions": "fp32", "modes": "latency"}


def _needs(path: Path | None, what: str) -> Path:
    if path is None:
        why = f"{what} is not installed (make system; pip install intel-openmp)"
        if os.environ.get("VISIONBENCH_REQUIRE_ALLOCATORS") == "1":  # CI: this test must run
            pytest.fail(why)
        pytest.skip(why)
    return path


def test_env_items_split_at_a_new_name_only() -> None:
    assert parse_env(["KMP_AFFINITY=granularity=fine,compact,1,0,KMP_BLOCKTIME=1", "a=b,c"]) == [
        "KMP_AFFINITY=granularity=fine,compact,1,0", "KMP_BLOCKTIME=1", "a=b,c"]
    for bad, why in (("NOEQUALS", "NAME=VALUE"), ("1X=2", "NAME=VALUE"), ("LD_PRELOAD=x", "visionbench sets"),
                     ("A=1,A=2", "twice"), ("VISIONBENCH_X=1", "visionbench sets")):
        with pytest.raises(VisionbenchError, match=why):
            parse_env(bad)
    assert set(ALLOCATORS) == {"glibc", *ALLOCATOR_LIBS}


def test_bad_flags_are_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    base = ["run", "--model", "resnet50-tiny", "--engine", "onnxruntime", "--dry-run",
            "--output", str(tmp_path / "r")]
    bad_env, isolation, profile, aborts = vb_many([
        [*base, "--env", "KMP_BLOCKTIME"],
        [*base, "--isolation", "none", "--allocator", "tcmalloc"],
        [*base, "--mode", "profile", "--env", "A=1"],
        [*base[:4], "openvino", *base[5:], "--allocator", "jemalloc"]])
    for proc, said in ((bad_env, "--env takes NAME=VALUE"), (isolation, "--isolation none"),
                       (profile, "not to --mode cold or profile"),
                       (aborts, "openvino fails under allocator=jemalloc here")):
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert said in proc.stderr
    choice = vb(*base, "--allocator", "mimalloc")
    assert choice.returncode != 0 and "mimalloc" in choice.stderr


def test_a_library_not_installed_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment, "system_library", lambda name: None)
    with pytest.raises(VisionbenchError, match="is not installed: apt-get install libjemalloc2"):
        RunConfig.of(engines=["onnxruntime"], allocator="jemalloc")
    monkeypatch.setattr(environment, "intel_openmp", lambda: None)
    with pytest.raises(VisionbenchError, match="pip install intel-openmp"):
        Environment(omp_runtime="intel").variables()


def test_a_preload_that_did_not_take_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = _needs(system_library(ALLOCATOR_LIBS["jemalloc"][0]), "libjemalloc2")
    monkeypatch.setenv(environment.PRELOADED_ENV, json.dumps({"jemalloc": str(lib)}))
    with pytest.raises(VisionbenchError, match="not mapped in the worker process"):
        environment.verify()  # this process was not started with it


# jemalloc's worker takes 12-60 s to start here (tcmalloc's 3 s): under the slow marker.
@pytest.mark.parametrize("allocator", [pytest.param(a, marks=[pytest.mark.slow] * (a == "jemalloc"))
                                       for a in sorted(ALLOCATOR_LIBS)])
def test_the_worker_runs_on_the_allocator_and_the_results_say_so(allocator: str, tmp_path: Path,
                                                                 fake) -> None:
    lib = _needs(system_library(ALLOCATOR_LIBS[allocator][0]), ALLOCATOR_LIBS[allocator][1])
    r = visionbench.run(**FAST, allocator=allocator, env=["OMP_WAIT_POLICY=PASSIVE"],
                        output=tmp_path / "r")
    (m,) = r.measurements
    assert m.status == "ok" and m.ran_in == "the fake worker process"
    seen = m.environment
    # read inside the worker: the library serving malloc there is the one asked for
    assert seen["allocator"] == allocator and seen["malloc_from"] == os.path.realpath(lib)
    assert os.path.realpath(lib) in seen["mapped"]
    assert seen["variables"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert r.config.allocator == allocator and r.config.env == ["OMP_WAIT_POLICY=PASSIVE"]
    plain = visionbench.run(**FAST, output=tmp_path / "plain").measurements[0]
    assert "libc" in plain.environment["malloc_from"] and plain.environment["allocator"] == "glibc"


@pytest.mark.slow  # two runs in fresh workers, 12 s
def test_intel_openmp_serves_the_openmp_entry_points(tmp_path: Path, fake) -> None:
    lib = _needs(intel_openmp(), "intel-openmp")
    r = visionbench.run(**FAST, omp_runtime="intel", env=["KMP_BLOCKTIME=1"], output=tmp_path / "r")
    (m,) = r.measurements
    assert m.status == "ok" and m.environment["openmp_from"] == str(lib)
    assert not any("KMP_" in w for w in m.warnings)
    shipped = visionbench.run(**FAST, env=["KMP_BLOCKTIME=1"], output=tmp_path / "s").measurements[0]
    assert any("KMP_BLOCKTIME: read by Intel's OpenMP only" in w for w in shipped.warnings), (
        shipped.warnings)


def test_each_engine_proposes_the_knobs_that_can_act_on_it(fake) -> None:
    torch, openvino = get_engine("torch"), get_engine("openvino")
    assert "omp-runtime=intel" in torch.environments() and "OMP_WAIT_POLICY=PASSIVE" in torch.environments()
    # OpenVINO aborts under a preloaded tcmalloc or jemalloc (measured): never searched, and
    # refused in one line when asked; eager PyTorch's Intel OpenMP knobs measured to do nothing.
    assert openvino.environments() == {}
    assert "aborts compiling" in (openvino.environment_problem(Environment("jemalloc")) or "")
    assert openvino.environment_problem(Environment()) is None
    assert set(get_engine("torch-eager").environments()) == {
        "allocator=tcmalloc", "allocator=jemalloc", "OMP_WAIT_POLICY=PASSIVE"}
    assert any("does nothing on openvino" in w
               for w in openvino.environment_warnings(Environment(omp_runtime="intel")))
    fake(env_speedup={"FAKE_FAST=1": 2.0, "FAKE_IDLE=1": 3.0},
         env_nothing=["FAKE_IDLE=1"])
    assert set(get_engine("fake").environments()) == {"FAKE_FAST=1"}  # the knob doing nothing is out


@pytest.mark.slow
def test_tune_takes_an_environment_only_where_it_measured_faster(tmp_path: Path, fake) -> None:
    """The fake engine's calls are 1.6x faster in a process with FAKE_FAST=1, 0.6x with
    FAKE_SLOW=1; FAKE_IDLE=1 would be 3x but is recorded as doing nothing, so never tried."""
    fake(ms_per_batch=2.0, ms_per_image=0.1,
         env_speedup={"FAKE_FAST=1": 1.6, "FAKE_SLOW=1": 0.6, "FAKE_IDLE=1": 3.0},
         env_nothing=["FAKE_IDLE=1"])
    out = tmp_path / "tune"
    proc = vb("tune", "--model", "resnet50-tiny", "--calibration-samples", "8", "--engine", "fake",
              "--precision", "fp32", "--batch-sizes", "2", "--batch-size", "2", "--budget", "90s",
              "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "results.json").read_text())
    (t,) = r["tune"]
    tried = [m["environment"]["env"] for m in r["measurements"] if m["status"] == "ok"]
    assert {"FAKE_FAST": "1"} in tried and {"FAKE_SLOW": "1"} in tried
    assert not any("FAKE_IDLE" in e for e in tried)
    assert t["winner_setting"]["environment"]["env"] == {"FAKE_FAST": "1"}, t
    assert "--env FAKE_FAST=1" in t["winner_command"]
    tags = [c["tag"] for c in t["confirmed"]]
    assert any(tag.endswith("-env") for tag in tags)  # its control, confirmed beside it


def test_an_environment_wins_only_over_its_control() -> None:
    """Beating the default is not enough: a variant must beat the same setting in a fresh process
    as shipped, round by round; its control is confirmed beside it."""
    fast = Setting(8, environment=Environment("tcmalloc"))
    ctl = control(fast)
    assert ctl == Setting(8, environment=Environment()) and ctl.shape == "b8-env"
    assert fast.shape == "b8-env-tcmalloc" and "--allocator tcmalloc" in rerun_command(
        RunConfig.of(engines=["fake"]), "fake", "fp32", fast)
    rounds = {ctl: [100.0, 101.0, 99.0], fast: [110.0, 112.0, 108.0], Setting(8): [90.0] * 3}
    assert faster_than_control(fast, rounds) and faster_than_control(Setting(8), rounds)
    assert not faster_than_control(fast, {**rounds, fast: [100.5, 100.0, 99.5]})
    assert not faster_than_control(fast, {fast: rounds[fast]})  # no control measured
