"""LoadGen's logs: a test run with them written safely into a run directory, and read back: the
detail log's verdict and metrics, each broken rule in plain words, and the accuracy log's
responses."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from visionbench.errors import VisionbenchError
from visionbench.fsutil import own_dir
from visionbench.scenarios.mlperf.settings import LoadgenScenario


def start_test(lg: Any, sut: tuple[Callable, Callable], qsl: tuple[int, int, Callable, Callable],
               settings: Any, log_dir: Path) -> None:
    """LoadGen's test of ``sut`` (issue, flush) over ``qsl`` (total and performance sample
    counts, load, unload) under ``settings``, its logs moved into ``log_dir``. LoadGen opens its
    logs with its own code, following links: it writes into a folder made for it now, whose files
    are then renamed into place (a link planted there is replaced)."""
    fresh = Path(tempfile.mkdtemp(prefix=".loadgen-", dir=own_dir(log_dir)))
    log = lg.LogSettings()
    log.log_output.outdir = str(fresh)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    handles = (lg.ConstructSUT(*sut), lg.ConstructQSL(*qsl))
    try:
        lg.StartTestWithLogSettings(handles[0], handles[1], settings, log)
    finally:
        lg.DestroyQSL(handles[1])
        lg.DestroySUT(handles[0])
        for f in fresh.iterdir():
            os.replace(f, log_dir / f.name)
        fresh.rmdir()


def _ms(ns: Any) -> float | None:
    return None if ns is None else float(ns) / 1e6


#: The scenario's metric: what MLPerf reports for it.
METRICS: dict[LoadgenScenario, tuple[str, str, str]] = {
    "SingleStream": ("90th percentile latency", "result_90.00_percentile_latency_ns", "ms"),
    "MultiStream": ("99th percentile latency per query", "result_99.00_percentile_latency_ns", "ms"),
    "Server": ("scheduled queries per second", "result_scheduled_samples_per_sec", "queries/s"),
    "Offline": ("samples per second", "result_samples_per_second", "samples/s"),
}


def ran_seconds(scenario: LoadgenScenario, d: dict[str, Any]) -> float:
    """How long the timed part lasted: Offline until its last sample; Single- and MultiStream
    query after query; Server as scheduled."""
    if scenario == "Offline":
        return (d.get("result_max_latency_ns") or 0) / 1e9
    if scenario in ("SingleStream", "MultiStream"):
        return (d.get("result_query_count") or 0) * (d.get("result_mean_latency_ns") or 0) / 1e9
    return (d.get("generated_query_duration") or 0) / 1e9


def explain(scenario: LoadgenScenario, d: dict[str, Any], single_ms: float | None = None) -> list[str]:
    """Each rule LoadGen found broken, in plain words. ``single_ms``: one sample's latency
    measured before the run, to tell a bound no load can meet from one the load breaks."""
    rules = []
    advice = str(d.get("result_invalid_reason") or "").strip()
    if d.get("result_min_duration_met") is False:
        rules.append(f"min duration not met: ran {ran_seconds(scenario, d):.1f} s, needs "
                     f"{d.get('effective_min_duration_ms', 0) / 1000:.0f} s"
                     + (f" (LoadGen: {advice})" if advice else ""))
    if d.get("result_min_queries_met") is False:
        rules.append(f"min queries not met: {d.get('result_query_count')} queries, needs "
                     f"{d.get('effective_min_query_count')}")
    if d.get("result_perf_constraints_met") is False:
        target = _ms(d.get("effective_target_latency_ns"))
        pct = 100 * float(d.get("effective_target_latency_percentile") or 0.99)
        got = _ms(d.get(f"result_{pct:.2f}_percentile_latency_ns"))
        if scenario == "Server":
            fix = ("lower --target-qps" if single_ms is None or single_ms <= target else
                   f"one sample alone takes {single_ms:.1f} ms here, so no load can meet it: raise "
                   "--target-latency-ms")
            rules.append(
                f"latency bound not met: p{pct:g} {got:.1f} ms over the {target:g} ms target "
                f"({d.get('result_overlatency_query_count')} queries over); {fix}")
        else:
            rules.append("performance constraints not met: "
                         + (d.get("result_invalid_reason") or "see mlperf_log_summary.txt"))
    if d.get("early_stopping_met") is False:
        text = " ".join(str(d.get("early_stopping_result") or "").replace("*", " ").split())
        rules.append(f"early stopping not met: {text}" if text else "early stopping not met")
    rules += [f"LoadGen: {e}" for e in d.get("errors", [])]
    if d.get("result_validity") == "INVALID" and not rules:
        rules.append(advice or "INVALID; see mlperf_log_summary.txt")
    return rules


def read_detail(path: Path, performance: bool = True) -> dict[str, Any]:
    """LoadGen's detail log (``:::MLLOG {json}`` lines) as key -> last value; a performance run's
    must hold LoadGen's verdict."""
    out: dict[str, Any] = {"errors": []}
    try:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(":::MLLOG "):
                entry = json.loads(line[len(":::MLLOG "):])
                out[entry["key"]] = entry.get("value")
                if (entry.get("metadata") or {}).get("is_error"):
                    out["errors"].append(str(entry.get("value")))
    except (OSError, ValueError, KeyError) as e:
        raise VisionbenchError(f"cannot read LoadGen's log {path}: {e}") from e
    if performance and "result_validity" not in out:
        raise VisionbenchError(f"LoadGen's log {path} has no result (the run did not finish)")
    return out


def read_accuracy_log(path: Path) -> dict[int, int]:
    """LoadGen's accuracy log: each sample's response, here its top-1 class as one int32."""
    try:
        entries = json.loads(path.read_text())
        return {int(e["qsl_idx"]): int(np.frombuffer(bytes.fromhex(e["data"]), dtype=np.int32)[0])
                for e in entries}
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise VisionbenchError(f"cannot read LoadGen's accuracy log {path}: {e}") from e
