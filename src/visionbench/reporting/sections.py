"""A run's report as sections, built once from its results: each has a title, columns, rows (with
the cells to flag and the long reasons kept as notes), how to read it, notes and figures. The
console, summary.md and report.html render the same sections, so they cannot disagree on a
column. Every record kind has its section: the richer ones built here, any other from its
declaration in ``results.kinds``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from visionbench.reporting.format import (
    batch_latency,
    batch_text,
    cold_run_note,
    engine_text,
    fidelity_text,
    fmt,
    fp32_ratios,
    latency_values,
    per_batch,
    ran_as,
    resource_notes,
    roofline,
    share_text,
    suite_note,
    throughput_text,
    throughput_title,
    tune_rows,
    windows_text,
)
from visionbench.results import Measurement, Results
from visionbench.results.kinds import RecordKind
from visionbench.results.schema import CEILING_SHARE, LoadPoint


@dataclass(frozen=True)
class Column:
    name: str
    numeric: bool = False


@dataclass(frozen=True)
class Row:
    cells: tuple[str, ...]
    #: The record failed, ran emulated or varied beyond the threshold: the row is marked.
    bad: bool = False
    #: Indexes of cells a reader must not miss (FLAGGED fidelity, INVALID, FAIL).
    alerts: frozenset[int] = frozenset()
    #: A long reason (why a record failed or was skipped), printed once under the table.
    note: str = ""


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    #: How to read the table, in a paragraph (report.html prints it; `code` in backticks).
    intro: str = ""
    #: Lines under the table, in every renderer.
    notes: tuple[str, ...] = ()
    #: Figures shown after the table in report.html: (name, caption).
    figures: tuple[tuple[str, str], ...] = ()

    def footnotes(self) -> list[str]:
        """The rows' distinct notes, in order: row i refers to footnote ``ref(i)``."""
        return list(dict.fromkeys(r.note for r in self.rows if r.note))

    def ref(self, row: Row) -> str:
        return f"[{self.footnotes().index(row.note) + 1}]" if row.note else ""


def columns(*names: str, numeric: tuple[str, ...] = ()) -> tuple[Column, ...]:
    return tuple(Column(n, n in numeric) for n in names)


def _flagged(*cells: str) -> frozenset[int]:
    return frozenset(i for i, c in enumerate(cells) if c.endswith(("FLAGGED", "DISTURBED")))


def _bad(m: Measurement) -> bool:
    return m.status != "ok" or m.emulated or m.disturbed or any(
        w.startswith("unstable") for w in m.warnings)


BAR_THROUGHPUT = ("throughput", "Throughput per precision, grouped by engine; bars labelled with "
                                "images/s and batch size. Higher is better. Also saved as "
                                "throughput.png and throughput.svg.")
BAR_LATENCY = ("latency", "Latency at batch size 1: bar at the median (p50), whisker to the 99th "
                          "percentile. Lower is better. Also saved as latency.png and latency.svg.")


def throughput(results: Results) -> list[Section]:
    ms = [m for m in results.measurements if m.mode == "throughput"]
    if not ms:
        return []
    sweep, tune = per_batch(results), results.kind == "tune"
    names = ["engine", "precision", *(["phase"] if tune else []), "batch", "images/s", "windows",
             "CV", "vs fp32", "of peak", *(["p50 ms", "p99 ms"] if sweep else []), "ran",
             "fidelity to fp32"]
    ratios = fp32_ratios(results.measurements)
    rows = []
    for m in ms:
        cells = (engine_text(m), m.precision, *([m.phase or ""] if tune else []), batch_text(m),
                 throughput_text(m), windows_text(m),
                 "—" if m.cv is None else f"{100 * m.cv:.1f}%", ratios[m.id],
                 share_text(results, m), *(batch_latency(m) if sweep else []), ran_as(m),
                 fidelity_text(m))
        rows.append(Row(cells, _bad(m), _flagged(*cells), m.reason or ""))
    if sweep:
        figures = (("throughput", "Throughput by batch size, one line per engine and precision"
                    + (" (the search's batch ladder: one short window each, on the default "
                       "layout)" if tune else "") + ". Higher is better. Also saved as "
                    "throughput.png and throughput.svg."),
                   ("latency", "Latency of one call (the whole batch) by batch size: median (p50) "
                    "line, 99th percentile tick; logarithmic scale. Lower is better. Also saved "
                    "as latency.png and latency.svg."))
    else:
        figures = (BAR_THROUGHPUT,)
    return [Section("throughput", throughput_title(results),
                    columns(*names, numeric=("batch", "images/s", "windows", "CV", "vs fp32",
                                             "of peak", "p50 ms", "p99 ms")),
                    tuple(rows), figures=figures)]


def latency(results: Results) -> list[Section]:
    ms = [m for m in results.measurements if m.mode == "latency"]
    if not ms:
        return []
    rows = []
    for m in ms:
        cells = (engine_text(m), m.precision, *latency_values(m),
                 str(m.latency.count) if m.latency else "—", windows_text(m),
                 fmt(m.throughput_ips, ".1f"), ran_as(m), fidelity_text(m))
        rows.append(Row(cells, _bad(m), _flagged(*cells), m.reason or ""))
    return [Section("latency", "Latency (batch size 1, ms per image)",
                    columns("engine", "precision", "p50", "p90", "p99", "p99.9", "mean", "samples",
                            "windows", "images/s", "ran", "fidelity to fp32",
                            numeric=("p50", "p90", "p99", "p99.9", "mean", "samples", "windows",
                                     "images/s")),
                    tuple(rows), figures=(BAR_LATENCY,))]


def suite(results: Results) -> list[Section]:
    """A table per task (each workload x engine x precision: its throughput measurement and the
    reference method's batch-1 latency side by side), then the geometric means and scores."""
    from visionbench.results.suite import suite_rows

    tasks = {m.name: m.task for m in results.models} or {results.model.name: results.model.task}
    ratios = fp32_ratios(results.measurements)
    lat = {(m.model, m.engine, m.precision): m for m in results.measurements
           if m.mode == "latency" and m.method == "reference"}
    by_task: dict[str, list[Row]] = {}
    for m in results.measurements:
        if m.mode != "throughput":
            continue
        lm = lat.get((m.model, m.engine, m.precision))
        p50, p99 = latency_values(lm)[:3:2] if lm is not None else ["—", "—"]
        cells = (m.model or "", engine_text(m), m.precision, str(m.batch_size),
                 fmt(m.throughput_ips, ".1f"), ratios[m.id], p50, p99, ran_as(m),
                 fidelity_text(m) or (fidelity_text(lm) if lm is not None else ""))
        note = m.reason or (lm.reason if lm is not None else None) or ""
        by_task.setdefault(tasks.get(m.model or "", "other"), []).append(
            Row(cells, _bad(m), _flagged(*cells), note))
    numeric = ("batch", "images/s", "vs fp32", "p50 ms", "p99 ms")
    out = [Section(f"suite-{task}", f"Suite: {task}",
                   columns("workload", "engine", "precision", "batch", "images/s", "vs fp32",
                           "p50 ms", "p99 ms", "ran", "fidelity to fp32", numeric=numeric),
                   tuple(rows)) for task, rows in by_task.items()]
    summary = [Row((r.engine, r.precision, f"{r.workloads}" + (
        f" (missing {', '.join(r.missing)})" if r.missing else ""),
        fmt(r.throughput_geomean, ".2f"), fmt(r.p50_geomean_ms, ".2f"),
        "—" if r.speedup_vs_fp32 is None else f"{r.speedup_vs_fp32:.2f}x", fmt(r.score, ".1f")))
        for r in suite_rows(results)]
    out.append(Section(
        "suite-summary", "Suite summary (geometric means over the workloads)",
        columns("engine", "precision", "workloads", "geomean images/s", "geomean p50 ms",
                "speed-up vs fp32", "suite score",
                numeric=("geomean images/s", "geomean p50 ms", "speed-up vs fp32", "suite score")),
        tuple(summary), notes=(suite_note(results) + ".",),
        figures=(("throughput", "Throughput per workload, a bar per precision (log scale), "
                                "reference method."),
                 ("latency", "Batch-1 p50 latency per workload, a bar per precision (log scale)."))))
    return out


def resources(results: Results) -> list[Section]:
    """Per measurement: what its cold start cost on the way (model read, whole preparation, the
    cache's hits and builds, first inference), the memory its process held and its peak while
    timing, and the energy per image where the machine exposes it."""
    rows = []
    for m in results.measurements:
        c, mem, e = m.cold_start, m.memory, m.energy
        if c is None and mem is None:
            continue
        figure = (fmt(m.throughput_ips, ".1f") if m.mode == "throughput"
                  else fmt(m.latency.p50_ms if m.latency else None))
        energy = e is not None and e.available
        rows.append(Row((
            m.id, figure, fmt(c.read_seconds if c else None),
            fmt(c.prepare_seconds if c else None),
            "; ".join(f"{what}: {how}" for what, how in c.cache.items()) if c and c.cache else "—",
            fmt(c.first_inference_ms if c else None, ".1f"),
            fmt(mem.prepared_mib if mem else None, ".0f"), fmt(mem.peak_mib if mem else None, ".0f"),
            fmt(e.joules_per_image if energy else None, ".3f"),
            fmt(e.watts if energy else None, ".1f"))))
    if not rows:
        return []
    numbers = ("images/s or p50 ms", "read s", "prepare s", "first inference ms",
               "memory prepared MiB", "memory peak MiB", "J/image", "W")
    return [Section(
        "cold-start", "Cold start, memory and energy",
        columns("measurement", numbers[0], "read s", "prepare s", "cached files", *numbers[3:],
                numeric=numbers),
        tuple(rows), notes=tuple(resource_notes(results)),
        intro="What each measurement's preparation cost on the way: the engine reading the model "
              "file (where it tells it apart), the whole preparation (read, quantize, compile), "
              "each cached file it needed (hit, or built and how long), and the first inference's "
              "latency; this process may have prepared other sessions before, so these are "
              "observations, not a cold start measured in fresh processes (`--mode cold`). Then "
              "the resident memory of the process(es) that ran the measurement: held once the "
              "session and its inputs were ready, and the peak during its warm-up and timed "
              "windows alone (summed over pinned instances); and the energy per image and average "
              "power over the timed windows, from the CPU's RAPL counters where the machine "
              "exposes them.")]


def instances(results: Results) -> list[Section]:
    """Each pinned instance of each measurement: cores asked for and read back, speed, latency."""
    rows = tuple(Row((m.id, str(i.index), ",".join(map(str, i.cores)),
                      ",".join(map(str, i.affinity)), f"{i.throughput_ips:.1f}",
                      fmt(i.latency.p50_ms), fmt(i.latency.p99_ms)))
                 for m in results.measurements for i in m.per_instance)
    if not rows:
        return []
    return [Section(
        "instances", "Pinned instances",
        columns("measurement", "instance", "cores", "affinity read back", "images/s", "p50 ms",
                "p99 ms", numeric=("images/s", "p50 ms", "p99 ms")), rows,
        intro="Measurements made by several engine processes at once, each pinned to its own cores "
              "and released together: throughput above is their sum, latency pooled. Each "
              "instance's own figures, and the CPU affinity read back from it while it ran.")]


def measurements(results: Results) -> list[Section]:
    if results.kind == "suite":
        return [*suite(results), *resources(results), *instances(results)]
    return [*throughput(results), *latency(results), *resources(results), *instances(results)]


def _pct(v: float | None) -> str:
    return fmt(None if v is None else 100 * v, ".2f") + ("%" if v is not None else "")


def accuracy(results: Results) -> list[Section]:
    if not results.accuracy:
        return []
    d = results.data or {}
    rows = []
    for a in results.accuracy:
        cells = (a.engine, a.precision, _pct(a.top1), _pct(a.top5), _pct(a.agreement_with_fp32),
                 {"pass": "pass", "fail": "FAIL"}.get(a.mlperf_99 or "", "—"), ran_as(a))
        rows.append(Row(cells, a.status != "ok" or a.mlperf_99 == "fail" or a.emulated,
                        frozenset({5}) if a.mlperf_99 == "fail" else frozenset(), a.reason or ""))
    seconds = d.get("decode_and_preprocess_seconds")
    return [Section(
        "accuracy", f"Accuracy ({d.get('images', '?')} images)",
        columns("engine", "precision", "top-1", "top-5", "same top-1 as fp32", "MLPerf 99%", "ran",
                numeric=("top-1", "top-5", "same top-1 as fp32")), tuple(rows),
        intro=f"{d.get('root')} ({d.get('layout')}), {d.get('preprocessing')}"
              + (f"; decoding and preprocessing took {seconds:.1f} s, outside any timing"
                 if seconds is not None else "")
              + (". MLPerf 99%: top-1 at least 99% of this engine's FP32 top-1."
                 if d.get("labelled", True) else
                 ". The images have no labels: only agreement with FP32 is shown."))]


def tune(results: Results) -> list[Section]:
    if not results.tune:
        return []
    bound = next((t.max_latency_ms for t in results.tune if t.max_latency_ms), None)
    rows, notes, found = [], [], tune_rows(results)
    for r in found:
        rows.append(Row((r["engine"], r["precision"], r["setting"], r["ips"], r["p99"],
                         r["default"], r["vs"], f"{r['verdict']} (p {r['p']})", r["explored"]),
                        r["status"] != "ok"))
        if r["default_setting"]:
            notes.append(f"{r['engine']} {r['precision']}: the default was {r['default_setting']}"
                         + (f"; {r['verdict']}: {r['why']}" if r["why"] else "") + ".")
    notes += [f"Re-run {r['engine']} {r['precision']}: `{r['command']}`"
              for r in found if r["command"]]
    return [Section(
        "tune", "Tuned settings (confirmed round by round beside the default)"
        + (f", p99 per call within {bound:g} ms" if bound else ""),
        columns("engine", "precision", "best setting", "images/s", "p99 ms", "default images/s",
                "vs default", "verdict", "explored",
                numeric=("images/s", "p99 ms", "default images/s", "vs default")),
        tuple(rows), notes=tuple(notes),
        intro="Each engine and precision was searched in short windows of at least three batches, "
              "starting from the engine's own throughput configuration (the default to beat): "
              "batch sizes, then the engine's own concurrency (e.g. OpenVINO streams x requests "
              "in flight), pinned instances and the reference method around the best. The default "
              "and the best few were then measured round by round, every setting once per round "
              "in an order that changes between rounds, and each judged against the default on "
              "its per-round ratios (a paired t-test), so that load drifting over the search cannot "
              "pass for a difference; the setting with the highest median ratio is named, and the "
              "verdict says whether the rounds show it faster."
              + (f" Only settings whose p99 per call stayed within {bound:g} ms count."
                 if bound else ""))]


def mlperf(results: Results) -> list[Section]:
    """Each LoadGen run: the scenario's metric, VALID or INVALID (and whether MLPerf's minimums
    were kept), its percentiles, and every broken rule in words."""
    if not results.mlperf:
        return []
    rows = []
    for r in results.mlperf:
        if r.status != "ok":
            rows.append(Row((r.engine, r.precision, r.scenario, "—", "—", r.status, "—", "—", "—",
                             "—", r.reason or ""), True))
            continue
        if r.mode == "accuracy":
            metric, value = "top-1 (accuracy mode)", _pct(r.top1)
        else:
            metric, value = r.metric or "—", "—" if r.value is None else f"{fmt(r.value)} {r.unit}"
        result = r.validity or "—"
        if r.compliant is False:
            result += " (not compliant: shortened)"
        rows.append(Row((r.engine, r.precision, r.scenario, metric, value, result,
                         *[fmt(r.latency_ms.get(p)) for p in ("50", "90", "99")],
                         str(r.queries or "—"), "; ".join(r.failed_rules) or r.reason or "—"),
                        result != "VALID",
                        frozenset({5}) if result.startswith("INVALID") else frozenset()))
    return [Section(
        "mlperf", "MLPerf Inference scenarios (LoadGen)",
        columns("engine", "precision", "scenario", "metric", "value", "result", "p50 ms", "p90 ms",
                "p99 ms", "queries", "why", numeric=("value", "p50 ms", "p90 ms", "p99 ms",
                                                     "queries")),
        tuple(rows),
        notes=tuple(f"LoadGen logs: {r.log_dir}/mlperf_log_summary.txt, mlperf_log_detail.txt"
                    for r in results.mlperf if r.log_dir),
        intro="Driven by MLPerf's own LoadGen, which decides when queries arrive and judges the "
              "run: VALID only when the scenario's rules hold (minimum duration and query count, "
              "the latency bound, early stopping). A run shortened with `--short` or lowered "
              "minimums can be VALID for LoadGen but is not compliant with MLPerf's rules. "
              "LoadGen's logs are kept in the run directory.")]


def cold(results: Results) -> list[Section]:
    """``--mode cold``: per engine and precision, each phase's median over the fresh processes,
    and the time to the first answer as median [min-max]."""
    if not results.cold:
        return []
    rows = []
    for c in results.cold:
        if c.status != "ok":
            rows.append(Row((c.engine, c.precision, c.status, *["—"] * 8), True, note=c.reason or ""))
            continue
        ph = c.phases

        def med(name: str, spec: str = ".2f") -> str:
            return fmt(ph[name].median if name in ph else None, spec)  # noqa: B023

        total = ph["total"]
        rows.append(Row((
            (f"{c.model}: " if c.model else "") + c.engine, c.precision, str(c.processes),
            med("start"), med("import"), med("read"), med("prepare"), med("first_inference", ".1f"),
            f"{total.median:.2f} [{total.min:.2f}-{total.max:.2f}]", fmt(c.peak_rss_mib, ".0f"),
            "; ".join(f"{k}: {v}" for k, v in c.cache.items()) or "—")))
    note = cold_run_note(results)
    return [Section(
        "cold-processes", "Cold start in fresh processes (--mode cold)",
        columns("engine", "precision", "processes", "start s", "import s", "read s", "prepare s",
                "first inference ms", "first answer s", "peak MiB", "cached files",
                numeric=("processes", "start s", "import s", "read s", "prepare s",
                         "first inference ms", "first answer s", "peak MiB")),
        tuple(rows), notes=(f"{note}.",) if note else (),
        intro="How long until the first answer after a restart: each engine and precision started "
              "in fresh processes, one after another; each phase's median: the process up with "
              "visionbench imported, the engine's runtime imported, the model read, the session "
              "prepared (read, quantize, compile), the first batch-1 inference; and the whole, "
              "start to first answer.")]


#: Operations shown per profile; the rest summed in one row.
TOP_OPS = 10


def profiles(results: Results) -> list[Section]:
    """``--mode profile``: per engine and precision, the batch-1 latency unprofiled and profiled,
    how much of the profiled call the operations account for and the slowest operation types;
    then per profile its slowest operations, the rest summed."""
    if not results.profiles:
        return []
    rows = []
    for r in results.profiles:
        name = (f"{r.model}: " if r.model else "") + r.engine
        if r.status != "ok":
            rows.append(Row((name, r.precision, r.status, *["—"] * 9), True, note=r.reason or ""))
            continue
        total = r.ops_ms or 0.0
        types = "; ".join(f"{t} {ms / total:.0%}" for t, ms in list(r.by_type.items())[:4]) \
            if total > 0 else "—"
        precisions = "; ".join(f"{p or 'none'} {ms / total:.0%}" for p, ms in r.by_precision.items()
                               ) if total > 0 else "—"
        bad = r.consistent is not True
        gflops, of_peak, _ = roofline(results, r.precision, r.compute_flops, r.compute_ms)
        rows.append(Row((name, r.precision, str(r.calls), fmt(r.p50_ms, ".3f"),
                         fmt(r.profiled_p50_ms, ".3f"), fmt(r.coverage, ".0%"),
                         fmt(r.ms_added_by_profiler, "+.3f"), fmt(r.unplaced_ms, ".3f"),
                         fmt(gflops, ".1f"),
                         fmt(of_peak, ".0%"), types, precisions),
                        bad, alerts=frozenset({5}) if bad else frozenset()))
    out = [Section(
        "profiles", "Where the batch-1 time goes (--mode profile)",
        columns("engine", "precision", "calls", "p50 ms", "profiled p50 ms", "ops / call",
                "profiler adds ms", "not placed ms", "conv+matmul GFLOP/s", "of peak",
                "slowest operation types", "time by precision",
                numeric=("calls", "p50 ms", "profiled p50 ms", "ops / call", "profiler adds ms",
                         "not placed ms", "conv+matmul GFLOP/s", "of peak")),
        tuple(rows),
        notes=tuple(dict.fromkeys(f"{r.key}: {n}" for r in results.profiles for n in r.notes)),
        intro="Each engine and precision at batch 1, one synchronous request, in a fresh process: "
              "unprofiled calls first (p50 ms), then as many with the engine's own profiler on "
              "(OpenVINO's performance counters, ONNX Runtime's session profiling, torch.profiler, "
              "TensorFlow's profiler), never inside a timed window. `ops / call` is how much of a "
              "profiled call its operations account for: below 100%, the engine spends time "
              "between operations the profiler does not place (`not placed ms`; marked when more "
              "than 10% off, beyond what the profiler's resolution allows); `profiler adds ms` is "
              "the profiled p50 against the unprofiled. `conv+matmul GFLOP/s`: the convolutions' "
              "and matrix products' arithmetic over their time (FLOPs from the shapes each ran "
              "with, or the profiler's own count, else the model's per operation type), and its "
              "share of this machine's peak at the precision. The profiler's files (a "
              "Chrome/Perfetto trace, OpenVINO's executed graph) are in the run directory's "
              "profiles/ folder.",
        figures=(("profile", "Where the batch-1 time goes: each engine and precision's profiled "
                              "call split by group of operation types, and the time no operation "
                              "holds; the tick is the unprofiled p50."),))]
    for r in results.profiles:
        if r.status != "ok" or not r.ops:
            continue
        top, rest = r.ops[:TOP_OPS], r.ops[TOP_OPS:]
        op_rows = []
        for op in top:
            gflops, of_peak, of_bound = roofline(results, op.precision or r.precision, op.flops,
                                                 op.ms, op.bytes)
            op_rows.append(Row((op.name, op.op_type, op.precision or "—", op.kernel or "—",
                                f"{op.ms:.4f}", f"{op.share:.1%}", fmt(gflops, ".1f"),
                                fmt(of_peak, ".0%"), fmt(of_bound, ".0%"))))
        if rest:
            op_rows.append(Row((f"{len(rest)} others", "", "", "", f"{sum(o.ms for o in rest):.4f}",
                                f"{sum(o.share for o in rest):.1%}", "", "", "")))
        flops = (f"FLOPs from {r.flops_from}" if r.flops_from else "FLOPs not known") + (
            "; of bound: of the roofline's bound, the peak or the memory bandwidth times the "
            "operation's FLOPs per byte moved where lower" if any(o.bytes for o in top) else "")
        out.append(Section(
            f"profile-{r.key}", f"Slowest operations: {r.key}",
            columns("operation", "type", "precision", "kernel", "ms per call", "share", "GFLOP/s",
                    "of peak", "of bound",
                    numeric=("ms per call", "share", "GFLOP/s", "of peak", "of bound")),
            tuple(op_rows), notes=(f"{r.source}; files: {', '.join(r.files) or 'none'}", flops)))
    return out


#: The whole pipeline's stages, in order (``harness.pipeline.STAGES``, which the report may not
#: import: the records name them).
STAGES = ("decode", "preprocess", "queue", "batch", "feed", "inference", "postprocess")


def pipelines(results: Results) -> list[Section]:
    """``--mode pipeline``: per engine, precision and worker threads, images per second end to
    end beside inference alone, end-to-end latency and how much of it the stages account for;
    then each stage's median and p99 per image, with the stage figure."""
    if not results.pipelines:
        return []
    rows, stage_rows, notes = [], [], []
    for r in results.pipelines:
        name = (f"{r.model}: " if r.model else "") + r.engine
        if r.status != "ok":
            rows.append(Row((name, r.precision, r.status, *["—"] * 7), True, note=r.reason or ""))
            continue
        alone = r.inference_only_ips
        notes.append(f"{r.key}: decoder {r.decoder}{'; ' + r.decoder_note if r.decoder_note else ''}"
                     f"; images: {r.images_source}; preprocessing: {r.preprocessing}; "
                     f"post-processing: {r.postprocessing}; weights: {r.weights}")
        for t in r.runs:
            off = abs(t.accounted.min - 1) > 0.05 or abs(t.accounted.max - 1) > 0.05
            rows.append(Row((
                name, r.precision, f"{r.batch_size} x {t.threads}", f"{t.images_per_second:.1f}",
                fmt(alone, ".1f"), f"{t.images_per_second / alone:.0%}" if alone else "—",
                f"{t.end_to_end.p50_ms:.2f}", f"{t.end_to_end.p99_ms:.2f}",
                f"{t.accounted.min:.1%}-{t.accounted.max:.1%}",
                "—" if t.candidates is None else
                f"{t.candidates.median:.0f} ({t.detections.median:.0f} kept)" if t.detections else
                f"{t.candidates.median:.0f}"), off, alerts=frozenset({8}) if off else frozenset()))
            stage_rows.append(Row((name, r.precision, f"{r.batch_size} x {t.threads}", *(
                f"{t.stages[s].p50_ms:.3f} / {t.stages[s].p99_ms:.3f}" for s in STAGES))))
    return [Section(
        "pipelines", "The whole pipeline beside inference alone (--mode pipeline)",
        columns("engine", "precision", "batch x threads", "end-to-end images/s",
                "inference-only images/s", "of inference-only", "end-to-end p50 ms",
                "end-to-end p99 ms", "stages / end to end", "candidates to NMS",
                numeric=("end-to-end images/s", "inference-only images/s", "end-to-end p50 ms",
                         "end-to-end p99 ms")),
        tuple(rows), notes=tuple(notes),
        intro="Each engine and precision in a fresh process runs what a service runs: JPEG bytes "
              "decoded and preprocessed as the model's card says on `threads` worker threads, a "
              "bounded queue of two batches, batches formed from it, fed (stacked, laid out), "
              "inferred and post-processed, each image timed stage by stage. Inference alone is "
              "the same session's back-to-back calls on one fed batch. `stages / end to end`: "
              "each image's stage times summed over its end-to-end latency (lowest-highest; "
              "marked when more than 5% off)."), Section(
        "pipeline-stages", "Where each image's time goes in the pipeline: p50 / p99 ms",
        columns("engine", "precision", "batch x threads", *STAGES),
        tuple(stage_rows), figures=(("stages", "Mean milliseconds per image in each stage, one "
                                                "bar per engine, precision and thread count"),),
        intro="`queue`: from the image ready to the inference thread taking it (a full queue's "
              "wait, and the thread waiting for Python's interpreter lock, included); `batch`: "
              "from taken to its batch complete; `feed`: the batch stacked, laid out and handed "
              "to the engine; `postprocess`: the batch's, counted for each of its images.")]


def _with_ci(value: float | None, ci: tuple[float, float] | None, spec: str) -> str:
    if value is None:
        return "—"
    return format(value, spec) + (f" [{format(ci[0], spec)}-{format(ci[1], spec)}]" if ci else "")


def _served_by(s: dict) -> str:
    """A server in a line: what it says of itself, and what visionbench serve hosted on it."""
    text = f"server: {s.get('name', '?')} {s.get('version', '')}".rstrip()
    if "engine" in s:
        text += (f"; {s['engine']} {s.get('precision', '')} (ran {s.get('executed_precision', '?')}),"
                 f" batch {s.get('batch_size', '?')}, {s.get('concurrency', '')}")
    return text


def _in_server(ms: dict[str, float]) -> str:
    if "success" not in ms:
        return "—"
    return f"{ms['success']:.2f} ({ms.get('queue', 0.0):.2f} / {ms.get('compute_infer', 0.0):.2f})"


def loadtest(results: Results) -> list[Section]:
    """``visionbench loadtest``: per protocol and concurrency, the client's throughput and
    latency percentiles with their 95% intervals, errors by kind, its own CPU, the knee."""
    if not results.loadtest:
        return []
    rows = []
    groups: dict[tuple, list[LoadPoint]] = {}  # servers loaded together, per point
    for p in results.loadtest:
        if p.together:
            groups.setdefault((p.model, p.concurrency, tuple(p.together)), []).append(p)
    for p in results.loadtest:
        lat = p.latency
        poisson = p.mode == "poisson"
        verdict = ("VALID" if p.valid else "INVALID") if poisson else ("knee" if p.knee else "")
        at = p.url.split("://", 1)[-1]
        node = p.server.get("node")
        rows.append(Row((
            p.protocol, p.model + (f" @ {node or at}" if p.together else ""),
            f"Poisson {p.target_qps:g}/s" if poisson else str(p.concurrency),
            _with_ci(p.throughput_ips, p.throughput_ci, ".1f"),
            _with_ci(lat.p50_ms if lat else None, lat.p50_ci if lat else None, ".2f"),
            _with_ci(lat.p99_ms if lat else None, lat.p99_ci if lat else None, ".2f"),
            _in_server(p.server_ms),
            ", ".join(f"{n} {k}" for k, n in p.errors.items()) or "0",
            fmt(p.client_cpu_cores, ".2f"),
            "—" if p.ceiling_share is None else f"{p.ceiling_share:.0%}"
            + (" NEAR CEILING" if p.ceiling_share > CEILING_SHARE else ""),
            verdict),
            p.status != "ok" or verdict == "INVALID",
            frozenset({9} if (p.ceiling_share or 0) > CEILING_SHARE else set())
            | frozenset({10} if verdict == "INVALID" else set()),
            note=p.reason or ""))
        group = groups.get((p.model, p.concurrency, tuple(p.together)), [])
        if group and p is group[-1]:
            total = sum(q.throughput_ips or 0.0 for q in group)
            rows.append(Row((
                "", f"{p.model}: all {len(group)} servers", str(p.concurrency), f"{total:.1f}",
                "—", "—", "—", str(sum(sum(q.errors.values()) for q in group)),
                fmt(max(q.client_cpu_cores for q in group), ".2f"), "—", ""),
                any(q.status != "ok" for q in group)))
    notes = tuple(dict.fromkeys(_served_by(p.server) for p in results.loadtest if p.server))
    return [Section(
        "loadtest", "Served: the client's view, per protocol and concurrency",
        columns("protocol", "model", "users", "images/s [95% CI]", "p50 ms [95% CI]",
                "p99 ms [95% CI]", "in server ms (queue / engine)", "errors",
                "client CPU (cores)", "of ceiling", "knee / LoadGen",
                numeric=("users", "images/s [95% CI]", "p50 ms [95% CI]", "p99 ms [95% CI]",
                         "client CPU (cores)")),
        tuple(rows), notes=notes,
        figures=(("served", "p99 latency against throughput through the concurrencies, one line "
                            "per protocol and model, the knee ringed"),),
        intro="A closed loop: each user sends its next request when its last is answered. "
              "Latency is send to answer as the client sees it; the intervals come from the "
              "window's equal parts. `in server`: the server's own mean per request (Triton's "
              "statistics extension, which visionbench serve offers), inside the model server's "
              "predict: waiting for a free engine request, then the engine's call; the client's "
              "mean latency minus it is the HTTP or gRPC stack, (de)serialisation and the network. "
              "The knee is the highest throughput whose p99 stays within "
              "2x the lowest concurrency's p99. `client CPU`: the load generator's own CPU time "
              "over the window, in cores; `of ceiling`: the point's throughput over the best the "
              "same client reached on the server's no-op model (`loadtest --ceiling noop`), "
              "flagged above half: the client or the server's request handling, not the model, "
              "may be the limit (the client's CPU tells which). `Poisson N/s`: LoadGen's Server "
              "scenario at N queries per second (open loop, `loadtest --rate`), with LoadGen's "
              "verdict; the footnote names the rules an INVALID run broke. Servers loaded "
              "together (several URLs: a cluster's, one per node) have a row each, named by "
              "node, and a row of their sum.")]


#: The sections built here for a kind, by its field; any other kind gets ``declared``'s.
BUILDERS: dict[str, Callable[[Results], list[Section]]] = {
    "measurements": measurements, "accuracy": accuracy, "tune": tune, "mlperf": mlperf,
    "cold": cold, "profiles": profiles, "pipelines": pipelines, "loadtest": loadtest,
}


def _plain(record: BaseModel) -> list[str]:
    return [name for name, value in record if name != "status"
            and isinstance(value, str | int | float | bool | None)]


def declared(results: Results, kind: RecordKind) -> list[Section]:
    """A kind's section from its declaration: its title and the record fields it names (or its
    key, status and plain fields)."""
    records: list[BaseModel] = getattr(results, kind.field)
    if not records:
        return []
    names = list(kind.columns) or ["key", *_plain(records[0]), "status"]

    def cell(record: BaseModel, name: str) -> str:
        value = getattr(record, name, None)
        return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    numeric = tuple(n for n in names if isinstance(getattr(records[0], n, None), int | float)
                    and not isinstance(getattr(records[0], n, None), bool))
    rows = tuple(Row(tuple(cell(r, n) for n in names),
                     getattr(r, "status", "ok") not in ("ok", "complete"),
                     note=str(getattr(r, "reason", "") or "")) for r in records)
    title = kind.title or kind.description[:1].upper() + kind.description[1:]
    return [Section(kind.field, title, columns(*names, numeric=numeric), rows)]


def sections(results: Results) -> list[Section]:
    """Every section of the run's report, kind by kind in their declared order."""
    out: list[Section] = []
    for kind in results.kinds:
        build = BUILDERS.get(kind.field)
        out += build(results) if build else declared(results, kind)
    return out

