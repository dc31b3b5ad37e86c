"""The cache heals: a damaged entry (truncated, a part missing, no record) is set aside and
rebuilt once with a note, never handed to an engine; stale temporary files go; `visionbench
cache` lists and clears it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from visionbench import cache

from conftest import ENGINE_NAMES, TINY, vb


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("VISIONBENCH_CACHE", str(root))
    return root


def _build(calls: list[str], parts: tuple[str, ...] = ()):
    def build(path: Path) -> None:
        calls.append(path.name)
        path.write_bytes(b"model " * 100)
        for p in parts:
            path.with_name(p).write_bytes(b"weights " * 50)
    return build


def test_an_entry_is_built_once_and_rebuilt_when_damaged(private_cache):
    path = private_cache / "int8" / "m.xml"
    calls: list[str] = []
    build = _build(calls, ("m.bin",))
    with cache.watch() as first:
        assert cache.cached(path, "test model", build, ["m.bin"]) == path
    with cache.watch() as again:
        assert cache.cached(path, "test model", build, ["m.bin"]) == path
    assert calls == ["m.xml"] and first.notes == again.notes == []
    assert [e[:2] for e in first.events] == [("test model", "built")]
    assert [e[:2] for e in again.events] == [("test model", "hit")]
    record = json.loads((path.parent / "m.xml.record.json").read_text())
    assert record["what"] == "test model" and set(record["files"]) == {"m.xml", "m.bin"}

    damage = {
        "truncated": lambda: path.write_bytes(path.read_bytes()[:10]),
        "same size, other bytes": lambda: path.write_bytes(b"X" * len(path.read_bytes())),
        "a part missing": lambda: path.with_name("m.bin").unlink(),
        "no record": lambda: path.with_name("m.xml.record.json").unlink(),
    }
    expected = ["m.xml has 10 bytes, 600 when written", "m.xml differs from what was written (SHA-256)",
                "m.bin is missing", "it has no record of its contents"]
    for (name, do), why in zip(damage.items(), expected, strict=True):
        do()
        with cache.watch() as log:
            assert cache.cached(path, "test model", build, ["m.bin"]) == path, name
        [note] = log.notes
        assert note == (f"the cached test model was damaged ({why}): set aside and rebuilt"
                        if why != cache.NO_RECORD else "the cached test model had no record of "
                        "its contents (an earlier visionbench wrote it): set aside and rebuilt"), name
        assert cache.problem(path) is None and path.read_bytes() == b"model " * 100
    assert len(calls) == 5
    assert len(list((private_cache / cache.SET_ASIDE).rglob("m.xml*"))) >= 4


def test_a_watch_keeps_its_own_and_a_failing_block_passes_its_notes_on(private_cache):
    """Each watch sees what the cache did inside it once; notes of a block that raises reach the
    watch around it (a measurement that fails still tells that its model was rebuilt)."""
    path = private_cache / "models" / "w.onnx"
    calls: list[str] = []
    with cache.watch() as outer:
        with cache.watch() as inner:
            cache.cached(path, "w model", _build(calls))
        assert outer.events == [] and [e[1] for e in inner.events] == ["built"]
        path.write_bytes(b"damaged")
        with pytest.raises(RuntimeError), cache.watch():
            cache.cached(path, "w model", _build(calls))
            raise RuntimeError("the engine failed after the rebuild")
    assert len(outer.notes) == 1 and "damaged" in outer.notes[0]


def test_an_earlier_revision_is_removed_once_its_successor_is_built(private_cache):
    """A build revision bump rebuilds the entry and removes the recorded earlier one, said once;
    a file of that name the cache has no record of is not the cache's to delete."""
    folder = private_cache / "models"
    old, older, new = folder / "m-r2.onnx", folder / "m-r1.onnx", folder / "m-r3.onnx"
    cache.cached(old, "m model", _build([], ("m-r2.npz",)), ["m-r2.npz"])
    folder.joinpath("m-r1.onnx").write_bytes(b"the user's own file")
    with cache.watch() as log:
        cache.cached(new, "m model", _build([]), supersedes=[older, old])
    assert new.exists() and not old.exists() and not (folder / "m-r2.npz").exists()
    assert not (folder / "m-r2.onnx.record.json").exists()
    assert older.read_bytes() == b"the user's own file"
    assert log.notes == ["the cached m model (m-r2.onnx) was of an earlier revision of its build: "
                         "rebuilt, and the old entry removed"]
    with cache.watch() as again:
        cache.cached(new, "m model", _build([]), supersedes=[older, old])
    assert again.notes == [] and [e[1] for e in again.events] == ["hit"]


def test_stale_temporary_files_are_removed_and_fresh_ones_kept(private_cache):
    folder = private_cache / "int8"
    folder.mkdir(parents=True)
    old, fresh, tmpdir = folder / ".m.123.xml", folder / ".m.456.xml", folder / ".tmp-abc"
    for p in (old, fresh):
        p.write_text("half")
    tmpdir.mkdir()
    (tmpdir / "pre.onnx").write_text("half")
    kept = folder / "whole.onnx"
    kept.write_text("model")
    day_ago = time.time() - 2 * 24 * 3600
    for p in (old, tmpdir, kept):
        os.utime(p, (day_ago, day_ago))
    assert sorted(p.name for p in cache.tidy()) == [".m.123.xml", ".tmp-abc"]
    assert fresh.exists() and kept.exists() and not old.exists() and not tmpdir.exists()


def test_cache_command_lists_and_clears(private_cache):
    path = private_cache / "models" / "a.onnx"
    cache.cached(path, "test model", _build([]))
    (private_cache / "models" / "legacy.onnx").write_bytes(b"old")
    listed = vb("cache")
    assert listed.returncode == 0, listed.stderr
    assert "a.onnx" in listed.stdout and "test model" in listed.stdout and "whole" in listed.stdout
    assert "legacy.onnx" in listed.stdout and "unrecorded" in listed.stdout
    path.write_bytes(b"x")
    assert "damaged: a.onnx has 1 bytes" in vb("cache").stdout
    (private_cache / "machine-tune.json").write_text("{}")
    unconfirmed = vb("cache", "--clear")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert "no terminal" in unconfirmed.stderr and path.exists()
    cleared = vb("cache", "--clear", "--yes")
    assert cleared.returncode == 0 and "MiB freed" in cleared.stdout
    assert [p.name for p in private_cache.iterdir()] == ["machine-tune.json"]
    assert "0 entries" in vb("cache").stdout


def test_clear_refuses_a_folder_holding_the_users_files(private_cache):
    """VISIONBENCH_CACHE set to a folder of the user's by mistake: nothing in it is deleted."""
    cache.cached(private_cache / "models" / "a.onnx", "test model", _build([]))
    (private_cache / "thesis.tex").write_text("years of work")
    (private_cache / "photos").mkdir()
    (private_cache / "photos" / "a.jpg").write_bytes(b"jpeg")
    listed = vb("cache")
    assert "thesis.tex" in listed.stdout and "not visionbench's" in listed.stdout
    proc = vb("cache", "--clear", "--yes")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "2 thing(s) visionbench did not put there (photos, thesis.tex)" in proc.stderr
    assert "nothing deleted" in proc.stderr
    assert (private_cache / "thesis.tex").exists() and (private_cache / "photos" / "a.jpg").exists()
    assert (private_cache / "models" / "a.onnx").exists()


def test_the_api_clears_only_when_told_yes(private_cache):
    from visionbench import api
    from visionbench.errors import Unconfirmed

    cache.cached(private_cache / "int8" / "a.xml", "test model", _build([]))
    with pytest.raises(Unconfirmed):
        api.clear_cache()
    assert (private_cache / "int8" / "a.xml").exists()
    assert api.clear_cache(yes=True) > 0 and list(private_cache.iterdir()) == []


def test_every_name_the_cache_holds_is_declared_its_own():
    """What other modules keep in the cache's root is in cache.OWN or cache.KEPT, so that clear
    deletes it (or keeps it on purpose) rather than refusing it as the user's."""
    from visionbench import machine
    from visionbench.harness import peak

    declared = set(cache.OWN) | set(cache.KEPT)
    assert {peak.CACHE_NAME, peak.KERNELS_DIR, machine.TUNE_SAVED} <= declared


def test_the_cache_root_is_private_and_a_shared_one_refused(private_cache):
    from visionbench.errors import VisionbenchError
    from visionbench.fsutil import cache_dir

    assert cache_dir() == private_cache and private_cache.stat().st_mode & 0o777 == 0o700
    private_cache.chmod(0o775)
    with pytest.raises(VisionbenchError, match="writable by its group: a model planted"):
        cache_dir()
    proc = vb("cache")
    assert proc.returncode == 2 and "chmod go-w" in proc.stderr and "Traceback" not in proc.stderr
    private_cache.chmod(0o757)
    with pytest.raises(VisionbenchError, match="writable by others"):
        cache_dir()
    private_cache.chmod(0o700)
    if os.geteuid() != 0:
        pytest.skip("giving the folder to another user needs root")
    os.chown(private_cache, 65534, -1)
    try:
        with pytest.raises(VisionbenchError, match=r"belongs to another user \(uid 65534\)"):
            cache_dir()
    finally:
        os.chown(private_cache, 0, -1)


@pytest.mark.slow
@pytest.mark.parametrize("engine", [e for e in ("onnxruntime", "openvino") if e in ENGINE_NAMES])
def test_a_corrupt_cached_int8_model_is_rebuilt_with_a_note(private_cache, tmp_path, engine):
    args = ["run", *TINY, "--engine", engine, "--precision", "int8", "--mode", "latency",
            "--iterations", "3", "--repeats", "1", "--warmup", "1"]
    assert vb(*args, "--output", str(tmp_path / "a")).returncode == 0
    [model] = [p for p in (private_cache / "int8").iterdir()
               if p.suffix in (".onnx", ".xml") and p.name.startswith(engine)]
    part = model.with_suffix(".bin") if engine == "openvino" else model
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # as a full disk leaves it
    proc = vb(*args, "--output", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    [m] = json.loads((tmp_path / "b" / "results.json").read_text())["measurements"]
    assert m["status"] == "ok" and m["quantized_ops"] > 0
    assert any(w.startswith("the cached ") and "was damaged" in w and w.endswith("rebuilt")
               for w in m["warnings"]), m["warnings"]
    assert cache.problem(model) is None


def test_two_processes_share_one_cache_without_a_rebuild(private_cache, tmp_path):
    """Two processes ask for the same 50 entries at once, each built slowly (the file renamed
    into place, then a pause before its record): each entry is built once, none is set aside."""
    import subprocess
    import sys

    log = tmp_path / "builds.log"
    code = f"""
import os, sys, time
from pathlib import Path
from visionbench import cache
def build(path):
    with open({str(log)!r}, "a") as f:
        f.write(path.name + "\\n")
    path.write_bytes(b"model " * 1000)
    time.sleep(0.01)
with cache.watch() as seen:
    for i in range(50):
        p = Path({str(private_cache)!r}) / "models" / f"e{{i}}.onnx"
        assert cache.cached(p, "slow model", build) == p
print(len(seen.notes), flush=True)
"""
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert [o[0].strip() for o in outs] == ["0", "0"]
    built = log.read_text().split()
    assert sorted(built) == sorted(f"e{i}.onnx" for i in range(50))
    assert not (private_cache / cache.SET_ASIDE).exists()
