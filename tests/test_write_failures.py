"""A write that fails (permission denied, a full disk, a read-only file system) on the report and
its figures, the run lock, an old run moved aside for --overwrite or put back, and the cache:
one line on stderr naming the path and the cause and saying what was kept, a non-zero exit, no
traceback, no temporary file left. Root loses its power over permissions by running the command
without the capabilities that override them (setpriv); full disks are size-limited tmpfs mounts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from visionbench.harness import peak
from visionbench.results import load
from visionbench.results.rundir import LOCK_FILE

from conftest import TINY, fill, leftovers, vb

RUN = [*TINY, "--engine", "onnxruntime", "--precision", "fp32", "--mode", "latency",
       "--iterations", "2", "--repeats", "1", "--warmup", "1"]
#: What root runs under to meet permission bits as any user does.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner",
          "--inh-caps=-dac_override,-dac_read_search,-fowner"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run with its report, copied by each test that needs one."""
    out = tmp_path_factory.mktemp("measured") / "run"
    proc = vb("run", *RUN, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def no_dac(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The prefix under which a command meets permission bits (nothing for a user but root)."""
    wrap = NO_DAC if os.geteuid() == 0 else []
    where = tmp_path_factory.mktemp("no-dac")
    where.chmod(0o500)
    try:
        proc = subprocess.run([*wrap, "touch", str(where / "x")], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no setpriv here to run a command without root's power over permissions")
    finally:
        where.chmod(0o700)
    if proc.returncode == 0 or "Permission denied" not in proc.stderr:
        pytest.skip(f"permission bits cannot be made to apply here: {proc.stderr.strip()}")
    return wrap


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The one line of a command that failed, without its prefix."""
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0].removeprefix("visionbench: error: ")


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run but its lock (which names its latest holder), by relative name."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


#: How a report cannot be written: the cause, and the file named.
REPORT_CASES = {
    "full": ("No space left on device", "latency.png"),
    "full, no lock": ("No space left on device", LOCK_FILE),
    "denied": ("Permission denied", "latency.png"),
    "denied, no lock": ("Permission denied", LOCK_FILE),
    "read-only": ("Read-only file system", LOCK_FILE),
}


@pytest.mark.parametrize("small_disk", [512 * 1024], indirect=True)
@pytest.mark.parametrize("case", REPORT_CASES)
def test_a_report_that_cannot_be_written_is_one_line_and_changes_nothing(
        case, measured, small_disk, request):
    cause, named = REPORT_CASES[case]
    run = small_disk / "run"
    shutil.copytree(measured, run, symlinks=True)
    if "no lock" in case:
        (run / LOCK_FILE).unlink()
    before = snapshot(run)
    wrap: list[str] = []
    if case.startswith("full"):
        fill(small_disk)
    elif case.startswith("denied"):
        wrap = request.getfixturevalue("no_dac")
        run.chmod(0o500)
    else:
        remount = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)],
                                 capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount a tmpfs read-only here: {remount.stderr.strip()}")
    line = one_line(vb("report", str(run), wrap=wrap))
    assert str(run / named) in line or f"{run} through {named}" in line, line
    assert cause in line, line
    assert (f"the measurements are kept in {run / 'results.json'}" in line
            or "nothing written" in line), line
    assert snapshot(run) == before  # the report there before, the measurements: as they were
    assert load(run).measurements
    assert os.path.lexists(run / LOCK_FILE) == ("no lock" not in case)
    assert not leftovers(small_disk)


@pytest.mark.parametrize("small_disk", [64 * 1024], indirect=True)
def test_a_run_whose_report_does_not_fit_is_one_line_and_keeps_its_measurements(small_disk):
    out = small_disk / "run"
    line = one_line(vb("run", *RUN, "--output", str(out)))
    assert line.startswith(f"cannot write the report {out}/") and "No space left on device" in line
    assert f"the measurements are kept in {out / 'results.json'}" in line
    results = load(out)
    assert results.status == "complete" and [m.status for m in results.measurements] == ["ok"]
    assert sorted(os.listdir(out)) == [LOCK_FILE, "raw", "results.csv", "results.json"]
    assert not leftovers(small_disk)


def test_a_run_lock_that_does_not_fit_leaves_nothing(small_disk):
    fill(small_disk)
    out = small_disk / "new"
    line = one_line(vb("run", *RUN, "--output", str(out)))
    assert line == (f"cannot lock {out} through {LOCK_FILE}: No space left on device; nothing "
                    "written")
    assert os.listdir(small_disk) == ["fill"]  # no folder, no lock


def test_an_output_not_writable_is_one_line_and_left_as_found(tmp_path, no_dac):
    """Refused where the folder cannot be made, and by the write probe where it exists."""
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        lines = [one_line(vb("run", *RUN, "--output", str(out), wrap=no_dac))
                 for out in (folder / "run", folder)]
    finally:
        folder.chmod(0o700)
    assert lines == [f"output directory is not writable: {out}: Permission denied; nothing "
                     "written" for out in (folder / "run", folder)]
    assert os.listdir(folder) == []


def test_an_old_run_that_cannot_be_moved_aside_is_left_as_it_was(measured, tmp_path, no_dac):
    parent = tmp_path / "results"
    parent.mkdir()
    run = parent / "run"
    shutil.copytree(measured, run, symlinks=True)
    before = snapshot(run)
    parent.chmod(0o500)
    try:
        line = one_line(vb("run", *RUN, "--output", str(run), "--overwrite", wrap=no_dac))
    finally:
        parent.chmod(0o700)
    assert line == f"cannot move the old run {run} aside: Permission denied; it is left as it was"
    assert snapshot(run) == before and os.listdir(parent) == ["run"]


@pytest.mark.parametrize("small_disk", [512 * 1024], indirect=True)
@pytest.mark.parametrize(("spare", "named"), [(0, LOCK_FILE), (1, "results.json")])
def test_an_overwrite_out_of_disk_puts_the_old_run_back(spare, named, measured, small_disk):
    """No page left: the new run's lock fails; one (the lock's): its results.json does."""
    run = small_disk / "run"
    shutil.copytree(measured, run, symlinks=True)
    before = snapshot(run)
    fill(small_disk, spare)
    line = one_line(vb("run", *RUN, "--output", str(run), "--overwrite"))
    assert str(run / named) in line or f"{run} through {named}" in line, line
    assert "No space left on device" in line and line.endswith(f"the old run is put back in {run}")
    assert snapshot(run) == before
    assert sorted(os.listdir(small_disk)) == ["fill", "run"] and not leftovers(small_disk)


def test_an_old_run_that_cannot_be_put_back_is_named_where_it_is_kept(measured, tmp_path, no_dac):
    parent = tmp_path / "results"
    parent.mkdir()
    moved = parent / ".run.overwritten-1-2"  # as --overwrite leaves it when killed
    shutil.copytree(measured, moved, symlinks=True)
    (parent / "run").mkdir()
    before = snapshot(moved)
    parent.chmod(0o500)
    try:
        line = one_line(vb("show", str(parent / "run"), wrap=no_dac))
    finally:
        parent.chmod(0o700)
    assert line == (f"cannot put the old run back in {parent / 'run'}: Permission denied; it is "
                    f"kept whole in {moved}")
    assert snapshot(moved) == before


def test_a_cache_folder_not_writable_is_one_line(tmp_path, monkeypatch, no_dac):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    monkeypatch.setenv("VISIONBENCH_CACHE", str(cache))
    out = tmp_path / "run"
    line = one_line(vb("run", *RUN, "--output", str(out), wrap=no_dac))
    assert line == (f"cannot build the resnet50-tiny model (seed 0) in the cache: {cache}/locks: "
                    "Permission denied; what the cache held is kept")
    assert os.listdir(cache) == [] and not out.exists()


def test_a_cache_that_cannot_be_cleared_is_one_line(tmp_path, monkeypatch, no_dac):
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "m.onnx").write_bytes(b"model")
    cache.chmod(0o700)
    (cache / "models").chmod(0o500)
    monkeypatch.setenv("VISIONBENCH_CACHE", str(cache))
    line = one_line(vb("cache", "--clear", "--yes", wrap=no_dac))
    assert line == (f"cannot clear the cache: {cache / 'models'}: Permission denied; what was not "
                    "deleted is kept")
    assert (cache / "models" / "m.onnx").read_bytes() == b"model"


def test_peak_kernels_that_cannot_be_built_in_the_cache_are_a_reason_not_an_error(tmp_path):
    if shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler to build the peak kernels with")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert peak.compile_kernels(blocked / "peak") == (
        None, f"cannot build the peak kernels in the cache: {blocked / 'peak'}: Not a directory")


def test_a_peak_that_cannot_be_cached_is_a_note(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / peak.CACHE_NAME).mkdir(parents=True)  # a folder where the file goes
    monkeypatch.setenv("VISIONBENCH_CACHE", str(cache))
    rate = peak.PeakRate(100.0, "AVX2 FMA", 2, (100.0,))
    monkeypatch.setattr(peak, "measure_peak", lambda key, note: peak.Peak({"fp32": rate}, (), key))
    notes: list[str] = []
    assert peak.machine_peak(notes.append).rates == {"fp32": rate}
    assert notes[-1] == f"the peak is not cached: {cache / peak.CACHE_NAME}: Is a directory"


@pytest.mark.parametrize("small_disk", [64 * 1024], indirect=True)
def test_a_fleet_record_that_cannot_be_written_is_one_line(small_disk: Path):
    from visionbench.errors import VisionbenchError
    from visionbench.results.fleet import FleetResults, FleetStore
    from visionbench.results.schema import now

    fleet = FleetResults(created_at=now(), command=["fleet"], address="auto", mode="sequential")
    out = small_disk / "fleet"
    out.mkdir()
    fill(small_disk)
    with pytest.raises(VisionbenchError) as e:
        FleetStore(out, fleet)
    assert str(e.value) == (f"cannot start the fleet run: {out / 'fleet.json'}: No space left on "
                            "device; nothing measured")
    assert not (out / "fleet.json").exists() and not leftovers(small_disk)
    (small_disk / "fill").unlink()
    store = FleetStore(out, fleet)
    fill(small_disk)
    fleet.status = "failed"
    with pytest.raises(VisionbenchError) as e:
        store.save()
    assert "cannot write the fleet's record" in str(e.value) and "No space left" in str(e.value)
    assert '"status": "running"' in (out / "fleet.json").read_text()  # the last good record
    assert not leftovers(small_disk)
