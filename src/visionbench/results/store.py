"""The results store: one directory per run with results.json, results.csv and raw latencies,
each rewritten atomically the moment a measurement completes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from visionbench.errors import VisionbenchError
from visionbench.fsutil import atomic_write_all, failure
from visionbench.results.kinds import Results, kind_of
from visionbench.results.rundir import Aside, RunLock, stopped_at
from visionbench.results.schema import SCHEMA_VERSION, Measurement, now
from visionbench.version import __version__

M = TypeVar("M", bound=BaseModel)

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
RAW_DIR = "raw"


CSV_FIELDS = [
    "engine", "precision", "mode", "batch_size", "threads", "status", "executed_precision",
    "emulated", "quantized_ops", "instances", "cores_per_instance", "throughput_ips",
    "throughput_ci95_low", "throughput_ci95_high", "cv", "repeats", "windows", "clean_windows",
    "disturbed", "latency_p50_ms", "latency_p50_ci_low", "latency_p50_ci_high", "latency_p90_ms",
    "latency_p90_ci_low", "latency_p90_ci_high", "latency_p99_ms", "latency_p99_ci_low",
    "latency_p99_ci_high", "latency_p999_ms", "latency_p999_ci_low", "latency_p999_ci_high",
    "latency_mean_ms", "latency_min_ms", "latency_max_ms", "latency_stdev_ms", "latency_count",
    "memory_prepared_mib", "memory_peak_mib", "first_inference_ms", "joules_per_image", "watts",
    "reason",
]


def _csv(results: Results) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS)
    w.writeheader()
    for m in results.measurements:
        row = {k: getattr(m, k) for k in CSV_FIELDS if hasattr(m, k)}
        row["windows"] = len(m.windows) or None
        if m.throughput_ci95 is not None:
            row.update(throughput_ci95_low=m.throughput_ci95[0],
                       throughput_ci95_high=m.throughput_ci95[1])
        if m.latency is not None:
            for k, v in asdict(m.latency).items():
                if k.endswith("_ci"):
                    if v is not None:
                        row[f"latency_{k}_low"], row[f"latency_{k}_high"] = v
                else:
                    row[f"latency_{k}"] = v
        if m.memory is not None:
            row.update(memory_prepared_mib=m.memory.prepared_mib, memory_peak_mib=m.memory.peak_mib)
        if m.cold_start is not None:
            row["first_inference_ms"] = m.cold_start.first_inference_ms
        if m.energy is not None and m.energy.available:
            row.update(joules_per_image=m.energy.joules_per_image, watts=m.energy.watts)
        w.writerow(row)
    return buf.getvalue()


class Store:
    """A directory whose document (a run's results, a fleet's nodes) is rewritten atomically on
    every change, and that ends complete, interrupted or failed without losing what was written.
    It holds the directory's lock (``rundir.RunLock``) until it finishes."""

    def __init__(self, directory: Path, document: Results | Any, lock: RunLock | None = None,
                 aside: Aside | None = None) -> None:
        self.dir = directory
        self.document = document
        self.lock = lock
        #: The run ``--overwrite`` moved aside: dropped at the first record, restored without one.
        self.aside = aside

    def save(self) -> None:
        raise NotImplementedError

    def interrupted(self) -> None:
        """What else Ctrl-C marks, before the document itself."""

    def stored(self) -> None:
        """A record was stored: a run moved aside by ``--overwrite`` is not needed any more."""
        if self.aside is not None:
            self.aside.drop()
            self.aside = None

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Measuring: an exception (Ctrl-C, SIGTERM included) marks the document interrupted or
        failed, and everything already written stays on disk."""
        try:
            yield
        except KeyboardInterrupt:
            self.interrupted()
            self.finish("interrupted")
            raise
        except BaseException:
            self.finish("failed")
            raise

    def finish(self, status: Literal["complete", "interrupted", "failed"]) -> None:
        self.document.status = status
        self.document.finished_at = now()
        try:
            self.save()
        finally:
            if self.aside is not None:  # nothing new was stored: the old run is put back
                self.aside.restore()
                self.aside = None
            if self.lock is not None:
                self.lock.release()
                self.lock = None


class RunStore(Store):
    """A run directory; ``save`` rewrites results.json and results.csv atomically. A record whose
    key is already stored replaces it (``--replace``, ``resume`` of a failed one)."""

    def __init__(self, directory: Path, results: Results, lock: RunLock | None = None,
                 aside: Aside | None = None) -> None:
        super().__init__(directory, results, lock, aside)
        self.results = results
        results.directory = directory
        raw = directory / RAW_DIR
        made = not raw.exists()
        try:
            raw.mkdir(parents=True, exist_ok=True)
            self._write()
        except OSError as e:
            if made:  # nothing of this run is left behind
                with contextlib.suppress(OSError):
                    raw.rmdir()
            raise VisionbenchError(f"cannot start the run: {failure(e, directory)}; nothing "
                                   "measured") from e

    def save(self) -> None:
        try:
            self._write()
        except OSError as e:
            raise VisionbenchError(f"cannot write the results {failure(e, self.dir)}; the "
                                   "measurements stored before are kept in "
                                   f"{self.dir / RESULTS_JSON}") from e

    def _write(self) -> None:
        """results.json and results.csv, both or neither."""
        atomic_write_all({self.dir / RESULTS_JSON: self.results.model_dump_json(indent=2).encode(),
                          self.dir / RESULTS_CSV: _csv(self.results).encode()})

    def finish(self, status: Literal["complete", "interrupted", "failed"]) -> None:
        if self.results.invocations:
            self.results.invocations[-1].status = status
            self.results.invocations[-1].finished_at = now()
        super().finish(status)

    def write_raw(self, measurement_id: str, windows: list[list[int]]) -> str:
        data = json.dumps({"unit": "ns", "windows": windows}).encode()
        return self.write_files(RAW_DIR, {f"{measurement_id}.json": data}, "the raw latencies ")[0]

    def write_files(self, folder: str, files: dict[str, bytes], what: str = "") -> list[str]:
        """A record's own files (its raw latencies, an engine's trace) in ``folder`` of the run,
        all or none; their paths relative to the run."""
        rels = [f"{folder}/{name}" for name in files]
        try:
            atomic_write_all({self.dir / rel: data for rel, data in zip(rels, files.values(),
                                                                        strict=True)})
        except OSError as e:
            raise VisionbenchError(f"cannot write {what}{failure(e, self.dir / folder)}; the "
                                   "measurements stored before it are kept in "
                                   f"{self.dir / RESULTS_JSON}") from e
        return rels

    def _put(self, records: list[Any], record: Any) -> None:
        at = next((i for i, r in enumerate(records) if r.key == record.key), None)
        if at is None:
            records.append(record)
        else:
            records[at] = record
        self.save()
        self.stored()

    def drop(self, which: Callable[[Measurement], bool]) -> None:
        """Remove the measurements ``which`` selects (a search measured again from scratch)."""
        self.results.measurements = [m for m in self.results.measurements if not which(m)]

    def add(self, record: BaseModel) -> None:
        """Store a record of any kind (``kinds``) the moment it exists: one with the key of a
        record there replaces it."""
        self._put(getattr(self.results, kind_of(record).field), record)


#: No number visionbench writes comes near this (byte counts, Unix times, nanoseconds); a file
#: holding one was not written by it as it stands.
LARGEST = 1e15
#: Keys whose numbers are times or rates, never negative.
_NON_NEGATIVE = ("_ms", "_ips", "_s", "_seconds")


def _non_finite(token: str) -> float:
    raise ValueError(f"a non-finite number ({token}), which visionbench never writes")


def _check_numbers(data: Any, where: str = "") -> str | None:
    """Where ``data`` holds a number out of what visionbench writes (non-finite, negative where a
    time, beyond ``LARGEST``), and what; else None."""
    if isinstance(data, dict):
        items: Any = data.items()
    elif isinstance(data, list):
        items = ((str(i), v) for i, v in enumerate(data))
    else:
        return None
    for key, v in items:
        at = f"{where}.{key}" if where else str(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            if v != v or abs(v) > LARGEST or (v < 0 and str(key).endswith(_NON_NEGATIVE)):
                return f"{at}: {v!r} is out of range"
        elif (found := _check_numbers(v, at)) is not None:
            return found
    return None


def read_json(path: Path) -> Any:
    """A results file's JSON; one line where it is unreadable, holds NaN or Infinity, or a number
    no visionbench writes (a negative time, a value beyond ``LARGEST``)."""
    try:
        data = json.loads(path.read_text(), parse_constant=_non_finite)
        found = _check_numbers(data)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VisionbenchError(f"{path} is not readable JSON: {e}") from e
    except RecursionError:  # lists or objects nested deeper than Python's recursion limit
        raise VisionbenchError(f"{path} is not a valid visionbench results file: nested too "
                               "deeply") from None
    if found is not None:
        raise VisionbenchError(f"{path} is not a valid visionbench results file: {found}")
    return data


def validated(model: type[M], data: Any, path: Path, what: str) -> M:
    """``data`` as ``model``; one line where it does not fit, or where a number read from a
    string ("NaN", "Infinity", "1e999") is one no visionbench writes."""
    try:
        document = model.model_validate(data)
    except ValidationError as e:
        raise invalid(path, what, e) from e
    if (found := _check_numbers(document.model_dump())) is not None:
        raise VisionbenchError(f"{path} is not a valid {what}: {found}")
    return document


def invalid(path: Path, what: str, e: ValidationError) -> VisionbenchError:
    """One line for the first error of a file that does not fit its schema."""
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"])
    return VisionbenchError(f"{path} is not a valid {what}: {where}: {err['msg']}")


def load(run_dir: Path) -> Results:
    """A run directory's results (or a results.json path), checked against this schema version."""
    try:
        is_dir = run_dir.is_dir()
        path = run_dir / RESULTS_JSON if is_dir else run_dir
        exists = path.exists()
    except OSError as e:  # a name too long
        raise VisionbenchError(f"cannot read {run_dir}: {e.strerror}") from e
    if not exists:
        what = "is not a visionbench run directory" if is_dir else "does not exist"
        raise VisionbenchError(f"{run_dir} {what} (no {RESULTS_JSON})")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("tool") != "visionbench":
        raise VisionbenchError(f"{path} is not a visionbench results file")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise VisionbenchError(
            f"{path} has results schema version {version!r}; this visionbench ({__version__}) "
            f"reads version {SCHEMA_VERSION}"
        )
    results = validated(Results, data, path, "visionbench results file")
    results.directory = path.parent
    results._stopped_at = stopped_at(path.parent, results.status)
    return results


def load_raw(run_dir: Path, m: Measurement) -> np.ndarray:
    """A measurement's per-inference latencies in ms, all timed windows pooled."""
    if m.raw_latencies is None:
        raise VisionbenchError(f"{m.id} in {run_dir} has no raw latencies")
    path = run_dir / m.raw_latencies
    try:
        windows = json.loads(path.read_text())["windows"]
        return np.concatenate([np.asarray(w, dtype=np.float64) for w in windows]) / 1e6
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise VisionbenchError(f"cannot read the raw latencies {path}: {e}") from e
