"""visionbench compare: ratios to a baseline, and whether each is beyond the noise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from visionbench.errors import VisionbenchError
from visionbench.results import RunStore, load
from visionbench.results.compare import compare
from visionbench.stats import cv, latency_summary

from conftest import vb, vb_many


def variant(src: Path, dst: Path, throughput: list[float], latency_ms: tuple[float, float],
            threads: int | None = None, seed: int = 0) -> Path:
    """A copy of a real run whose ok measurements get the given repeats and latency distribution."""
    rng = np.random.default_rng(seed)
    shutil.copytree(src, dst)
    results = load(dst)
    if threads is not None:
        results.config.threads = threads
    store = RunStore(dst, results)
    for m in results.measurements:
        if m.status != "ok":
            continue
        windows = [np.maximum(rng.normal(*latency_ms, 400), 0.01) * 1e6 for _ in throughput]
        m.raw_latencies = store.write_raw(m.id, [w.astype(np.int64).tolist() for w in windows])
        m.latency = latency_summary(np.concatenate(windows))
        m.throughput_per_repeat = list(throughput)
        m.throughput_ips = float(np.median(throughput))
        m.cv = cv(throughput)
        m.repeats = len(throughput)
    store.save()
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A fake-engine run (every precision and mode, on the machine's threads) and copies of it
    with set repeats and latencies: compare reads runs only."""
    import visionbench

    tmp = tmp_path_factory.mktemp("cmp")
    out = tmp / "src"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISIONBENCH_FAKE_ENGINE", "1")
        visionbench.run(model="resnet50-tiny", engines="fake", duration=0.05, repeats=2, warmup=1,
                        calibration_samples=8, isolation="none", threads=2, output=out)
    return {
        "base": variant(out, tmp / "base", [100.0, 101.0, 99.0], (10.0, 0.5)),
        "fast": variant(out, tmp / "fast", [200.0, 202.0, 198.0], (5.0, 0.25), threads=1, seed=1),
        "same": variant(out, tmp / "same", [100.5, 99.5, 101.5], (10.0, 0.5), seed=2),
        "once": variant(out, tmp / "once", [150.0], (10.0, 0.5), seed=3),
    }


def test_a_clear_speedup_is_called_with_its_interval(runs):
    cmp = compare([runs["base"], runs["fast"]])
    cells = [c for c in cmp.cells.values() if c.run == "fast" and c.speedup is not None]
    assert cells
    for c in cells:
        assert c.speedup == pytest.approx(2.0, rel=0.03)
        assert c.verdict == "faster" and c.p_value < 0.05
        assert c.ci[0] > 1 and c.ci[1] > c.ci[0]
    assert "--threads: 2 → 1" in cmp.differences["fast"] or any(
        d.startswith("--threads") for d in cmp.differences["fast"])


def test_noise_is_not_called_a_difference(runs):
    cmp = compare([runs["base"], runs["same"]])
    for c in cmp.cells.values():
        if c.run == "same" and c.speedup is not None:
            assert c.verdict == "within noise", c
            assert c.ci[0] < 1 < c.ci[1]
    assert not any(d.startswith("--threads") for d in cmp.differences["same"])


def test_a_verdict_on_disturbed_figures_says_so(runs, tmp_path):
    hit = tmp_path / "hit"
    shutil.copytree(runs["fast"], hit)
    results = load(hit)
    for m in results.measurements:
        m.disturbed = m.status == "ok"
    RunStore(hit, results).save()
    cmp = compare([runs["base"], hit])
    cells = [c for c in cmp.cells.values() if c.run == "hit" and c.speedup is not None]
    assert cells and all(c.why.endswith("rests on disturbed figures (hit: fewer clean windows "
                                        "than asked)") for c in cells)
    clean = compare([runs["base"], runs["fast"]])
    assert not any("disturbed" in c.why for c in clean.cells.values())


def test_one_repeat_cannot_be_judged(runs):
    cmp = compare([runs["once"]], baseline=runs["base"])
    assert cmp.baseline == "base"
    thr = [c for c in cmp.cells.values() if c.run == "once" and c.key[2] == "throughput" and c.speedup]
    assert thr and all(c.verdict == "cannot tell" and "2 or more repeats" in c.why for c in thr)


def test_compare_errors(runs, tmp_path):
    with pytest.raises(VisionbenchError, match="at least two runs"):
        compare([runs["base"]])
    other = tmp_path / "other"
    shutil.copytree(runs["base"], other)
    data = json.loads((other / "results.json").read_text())
    data["measurements"] = [m for m in data["measurements"] if m["engine"] == "nothing-alike"]
    (other / "results.json").write_text(json.dumps(data))
    with pytest.raises(VisionbenchError, match="no measurement in common"):
        compare([runs["base"], other])


def test_compare_cli_writes_tables_figures_and_json(runs, tmp_path):
    import matplotlib.image as mpimg

    out = tmp_path / "cmp"
    proc = vb("compare", str(runs["base"]), str(runs["fast"]), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "faster" in proc.stdout and "2.00x" in proc.stdout
    for name in ("compare_throughput", "compare_latency"):
        img = mpimg.imread(out / f"{name}.png")
        assert img.shape[1] >= 500 and img[..., :3].std() > 0.05
        assert (out / f"{name}.svg").stat().st_size > 1000
    data = json.loads((out / "compare.json").read_text())
    assert data["baseline"] == "base" and set(data["runs"]) == {"base", "fast"}
    fast = [c for c in data["cells"] if c["run"] == "fast" and c["speedup"]]
    assert fast and all(c["verdict"] == "faster" for c in fast)
    assert "## Throughput" in (out / "compare.md").read_text()
    assert "How differences are judged" in (out / "compare.html").read_text()
    assert data["run_noise"] is None and data["alpha"] == 0.01
    assert "run-to-run noise 2x the windows' spread" in proc.stdout
    given = vb("compare", str(runs["base"]), str(runs["fast"]), "--run-noise", "5",
               "--output", str(tmp_path / "given"))
    assert given.returncode == 0 and "5.0% run-to-run noise" in given.stdout
    assert json.loads((tmp_path / "given" / "compare.json").read_text())["run_noise"] == 0.05


def test_compare_bad_input_is_one_line(runs, tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(runs["base"], newer)
    data = json.loads((newer / "results.json").read_text())
    data["schema_version"] = 99
    (newer / "results.json").write_text(json.dumps(data))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "results.json").write_text("{not json")
    cases = [
        ([str(runs["base"]), str(tmp_path)], "is not a visionbench run directory"),
        ([str(runs["base"]), str(tmp_path / "missing")], "does not exist"),
        ([str(runs["base"]), str(newer)], "schema version 99"),
        ([str(runs["base"]), str(garbage)], "not readable JSON"),
        ([str(runs["base"])], "at least two runs"),
        ([str(runs["base"]), str(runs["same"]), "--run-noise", "100"], "--run-noise"),
        ([str(runs["base"]), str(runs["same"]), "--run-noise", "nan"], "--run-noise"),
    ]
    procs = vb_many([["compare", *args, "--output", str(tmp_path / "out")] for args, _ in cases])
    for (args, message), proc in zip(cases, procs, strict=True):
        err = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(err) == 1 and message in err[0], (args, proc.stderr)
