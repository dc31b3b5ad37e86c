"""How numbers and measurements read in every report (console, Markdown, HTML)."""

from __future__ import annotations

from visionbench.fidelity import MIN_SNR_DB
from visionbench.results import Accuracy, Measurement, Results
from visionbench.results.schema import PeakRate


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def ran_as(m: Measurement | Accuracy) -> str:
    """What the engine really executed, e.g. ``int8 (54 int8 ops)``, or the measurement's status."""
    if m.status != "ok":
        return m.status
    text = m.executed_precision or "?"
    if m.quantized_ops is not None:
        text += f" ({m.quantized_ops} int8 ops)"
    return text + (" EMULATED" if m.emulated else "") + (", resumed" if m.resumed else "")


def subject(results: Results) -> str:
    """What a run measured, for titles: the model and its task, or the suite."""
    if results.kind == "suite":
        return f"Vision suite ({len(results.models)} workloads)"
    task = results.model.task
    return f"{results.model.name} " + ("image classification" if task == "classification"
                                       else task if task != "other" else "")


def fidelity_text(m: Measurement) -> str:
    """A lower precision's fidelity to FP32: the lowest SNR of its outputs and the task's figure
    (top-1 agreement, boxes kept, pixel agreement), "FLAGGED" under a threshold; "" for FP32."""
    f = m.fidelity
    if f is None:
        return ""
    if f.contradiction:
        return "FP32's own outputs FLAGGED"
    snrs = [o.snr_db for o in f.outputs if o.snr_db is not None]
    parts = [f"{min(snrs):.1f} dB" if snrs else "identical"]
    for key, what in (("top1_agreement", "top-1"), ("boxes_kept", "boxes"),
                      ("pixel_agreement", "pixels")):
        if f.task.get(key) is not None:
            parts.append(f"{what} {f.task[key]:.1%}")
    return ", ".join(parts) + (" FLAGGED" if f.flags else "")


def fidelity_notes(results: Results) -> list[str]:
    """How to read the fidelity column, and each flag."""
    ms = [m for m in results.measurements if m.fidelity is not None]
    if not ms:
        return []
    f = ms[0].fidelity
    own = sorted({m.fidelity.min_snr_db for m in ms} - {MIN_SNR_DB})  # type: ignore[union-attr]
    out = [f"fidelity to fp32: the same engine's FP32 outputs on the same {f.images} inputs "
           f"({f.inputs}); the lowest signal-to-noise ratio of the outputs (flagged under "
           f"{MIN_SNR_DB:.0f} dB"
           + "".join(f"; the INT8 of a depthwise network under {x:.0f} dB, which a trained one "
                     "reads more than" for x in own)
           + "), and the task's agreement where the outputs mean something"
           + (f" (here: {f.task_reason})" if f.task_reason else "")]
    out += [f"FLAGGED {m.id}: {'; '.join(m.fidelity.flags)}" for m in ms if m.fidelity.flags]
    return out


def history(results: Results) -> str | None:
    """The commands that wrote the run, where more than one did (--append, resume)."""
    if len(results.invocations) < 2:
        return None
    return "Written by {} commands: {}.".format(len(results.invocations), "; ".join(
        f"{i.how} {i.started_at[:16].replace('T', ' ')} ({i.status})" for i in results.invocations))


def engine_text(m: Measurement) -> str:
    """The engine, with the method where it is not the reference: ``openvino (engine method)``."""
    return m.engine + ("" if m.method == "reference" else f" ({m.method} method)")


def method_notes(results: Results) -> list[str]:
    """Per engine and mode whose own configuration is the reference method's: one row stands for
    both methods, and why."""
    seen = {(m.engine, m.mode): m.engine_method for m in results.measurements if m.engine_method}
    return [f"{engine} {mode}: one row for both methods: {why}"
            for (engine, mode), why in seen.items()]


def batch_text(m: Measurement) -> str:
    """The batch size, with pinned instances and what the engine ran at once (in its words:
    streams and requests in flight, concurrent sessions) where there were any."""
    extra = []
    if m.layout is not None:
        extra.append(f"{m.instances}x{m.cores_per_instance} cores")
    if m.concurrency is not None and m.concurrency.text:
        extra.append(m.concurrency.text)
    return f"{m.batch_size}" + (f" ({', '.join(extra)})" if extra else "")


def setting_text(setting: dict) -> str:
    """A tuned setting in words: batch 32, 2 instances x 1 core; batch 64, engine method, 2
    streams x 4 requests; batch 32, 2 threads, tcmalloc."""
    parts = [f"batch {setting['batch_size']}"]
    if setting.get("cores_per_instance"):
        parts.append(f"{setting['instances']} instances x {setting['cores_per_instance']} cores")
    else:
        parts.append(f"{setting['threads']} threads")
    if setting.get("method", "reference") != "reference":
        parts.append(f"{setting['method']} method")
    if setting.get("concurrency"):
        parts.append(setting["concurrency"])
    if (env := setting.get("environment")) is not None:
        knobs = [env["allocator"]] if env.get("allocator", "glibc") != "glibc" else []
        knobs += ["Intel OpenMP"] if env.get("omp_runtime") == "intel" else []
        knobs += [f"{k}={v}" for k, v in (env.get("env") or {}).items()]
        parts.append(", ".join(knobs) if knobs else "a fresh process as shipped")
    return ", ".join(parts)


def tune_rows(results: Results) -> list[dict[str, str]]:
    """Per engine and precision: the winner, its speed, its p99, and how it compares with the
    default setting measured beside it (medians over the confirmation rounds)."""
    by_id = {m.id: m for m in results.measurements}
    rows = []
    for t in results.tune:
        w, d = by_id.get(t.winner or ""), by_id.get(t.default or "")
        w_ips = t.winner_ips if t.winner_ips is not None else (w.throughput_ips if w else None)
        d_ips = t.default_ips if t.default_ips is not None else (d.throughput_ips if d else None)
        rows.append({
            "engine": t.engine, "precision": t.precision, "status": t.status,
            "setting": setting_text(t.winner_setting) if t.winner_setting else (t.reason or t.status),
            "ips": fmt(w_ips, ".1f"),
            "p99": fmt(w.latency.p99_ms if w and w.latency else None),
            "default": fmt(d_ips, ".1f"),
            "default_setting": setting_text(t.default_setting) if t.default_setting else "",
            "vs": "—" if t.speedup_vs_default is None else f"{t.speedup_vs_default:.2f}x",
            "verdict": t.verdict or "—",
            "why": t.verdict_reason or "",
            "p": "—" if t.p_value is None else f"{t.p_value:.2g}",
            "command": t.winner_command or "",
            "explored": f"{t.explored} in {t.seconds_used:.0f} s"
                        + (f", {t.rounds} rounds" if t.rounds else ""),
        })
    return rows


def batch_latency(m: Measurement) -> list[str]:
    """p50 and p99 of one call (one whole batch) in ms: a sweep's latency column."""
    lat = m.latency
    return [fmt(lat.p50_ms if lat else None), fmt(lat.p99_ms if lat else None)]


def throughput_title(results: Results) -> str:
    return {"sweep": "Throughput and latency by batch size (images/s; ms per batch)",
            "tune": "Every setting the search measured (images/s; ms per batch)"}.get(
        results.kind, "Throughput (images/s, large batch)")


def per_batch(results: Results) -> bool:
    """Whether throughput tables show each call's latency (sweeps and searches)."""
    return results.kind in ("sweep", "tune")


def with_interval(value: float | None, ci: tuple[float, float] | None, spec: str = ".2f") -> str:
    """``54.2 ± 0.8``: the figure and the farther bound of its 95% interval (the percentiles'
    intervals are not symmetric: the wider side is shown)."""
    if value is None or ci is None:
        return fmt(value, spec)
    return f"{format(value, spec)} ± {format(max(value - ci[0], ci[1] - value), spec)}"


def throughput_text(m: Measurement) -> str:
    """images/s with the 95% interval of its windows' mean."""
    return with_interval(m.throughput_ips, m.throughput_ci95, ".1f")


def windows_text(m: Measurement) -> str:
    """How many windows the figure is made of: ``3``, ``3 (1 redone)``, ``1 of 3 DISTURBED``."""
    if not m.windows or m.clean_windows is None:
        return str(m.repeats or "—")
    if m.disturbed:
        return f"{m.clean_windows} of {m.repeats} DISTURBED"
    redone = sum(w.disturbed is not None for w in m.windows)
    return f"{m.clean_windows}" + (f" ({redone} redone)" if redone else "")


def latency_values(m: Measurement) -> list[str]:
    """p50, p90, p99 (each with its 95% interval), p99.9 and mean in ms."""
    lat = m.latency
    if lat is None:
        return ["—"] * 5
    return [with_interval(lat.p50_ms, lat.p50_ci), with_interval(lat.p90_ms, lat.p90_ci),
            with_interval(lat.p99_ms, lat.p99_ci), fmt(lat.p999_ms), fmt(lat.mean_ms)]


def fp32_ratios(ms: list[Measurement]) -> dict[str, str]:
    """Each throughput measurement's speed relative to FP32 on the same model, engine and method,
    by id:
    FP32 at the same batch size where there is one (a sweep), else the engine's FP32 (the study's
    batch)."""
    fp32 = [m for m in ms if m.mode == "throughput" and m.precision == "fp32" and m.status == "ok"]
    same_batch = {(m.model, m.engine, m.method, m.batch_size): m.throughput_ips for m in fp32}
    engine = {(m.model, m.engine, m.method): m.throughput_ips for m in fp32}

    def ratio(m: Measurement) -> str:
        if m.phase is not None:  # a search's settings differ in more than precision
            return "—"
        base = (same_batch.get((m.model, m.engine, m.method, m.batch_size))
                or engine.get((m.model, m.engine, m.method)))
        return f"{m.throughput_ips / base:.2f}x" if m.throughput_ips and base else "—"

    return {m.id: ratio(m) for m in ms if m.mode == "throughput"}


def cold_run_note(results: Results) -> str | None:
    c = next((c for c in results.cold if c.status == "ok"), None)
    if c is None:
        return None
    return (f"cold start: {c.processes} fresh processes per engine and precision, one after "
            f"another, timed from each process's start to its first batch-1 answer; OS file cache "
            f"{c.file_cache}" + (f"; INT8 quantization {c.quantization}" if any(
                r.quantization for r in results.cold) else "")
            + "; medians (first answer: median [min-max])")


def resource_notes(results: Results) -> list[str]:
    """How the cold-start, memory and energy figures were taken, and why energy is missing."""
    ms = [m for m in results.measurements if m.memory is not None]
    if not ms:
        return []
    out = ["cold start: observed on the way to each measurement, in a process that may have "
           "prepared others before (`--mode cold` measures fresh processes); memory: resident "
           f"MiB of the measuring process(es), {ms[0].memory.method}"]
    reasons = {m.energy.reason for m in ms if m.energy is not None and not m.energy.available}
    out += [f"energy: unavailable: {r}" for r in sorted(r for r in reasons if r)]
    domains = next((m.energy.domains for m in ms if m.energy and m.energy.available), None)
    if domains:
        out.append(f"energy: RAPL counters {', '.join(domains)} read at each timed window's edges")
    return out


def suite_note(results: Results) -> str:
    return (f"suite version {results.suite_version}: score = geometric mean over the workloads of "
            "sqrt(images/s x 1000 / batch-1 p50 ms), reference method; needs every workload; "
            "compares only between runs of the same suite version")


def machine_note(results: Results) -> list[str]:
    """The machine's state at the run's start, in one line (where the run recorded it)."""
    st = results.system.state
    if st is None:
        return []
    parts = []
    if st.steal is not None:
        parts.append(f"steal {st.steal:.1%}")
    if st.pressure is not None:
        parts.append(f"CPU pressure {st.pressure:.1%}")
    if st.load_1min is not None:
        parts.append(f"load {st.load_1min:.2f}")
    if st.governors:
        parts.append("governor " + ", ".join(st.governors))
    busy = "; busy: " + ", ".join(f"{b.comm} (pid {b.pid}) {b.cores:.0%} of a core"
                                  for b in st.busy) if st.busy else ""
    hidden = f"; not visible here: {', '.join(st.hidden)}" if st.hidden else ""
    return [f"machine at the start: {', '.join(parts)}{busy}{hidden} (visionbench sysinfo "
            "explains each)"]


def peak_for(results: Results, precision: str) -> PeakRate | None:
    """The machine's peak a figure at ``precision`` is held to: its own, or FP32's for a BF16
    the CPU has no instructions for (emulated on FP32's units); None where not measured."""
    peak = results.system.peak
    if peak is None:
        return None
    if precision == "bf16" and not results.system.bf16_native:
        return peak.rates.get("fp32")
    return peak.rates.get(precision)


def peak_share(results: Results, m: Measurement) -> float | None:
    """The figure's arithmetic rate (the model's GFLOP per image x images/s) as a share of the
    machine's peak for its precision."""
    info = {i.name: i for i in results.models}.get(m.model or "", results.model)
    peak = peak_for(results, m.precision)
    if not (m.throughput_ips and info.gflop_per_image and peak and peak.gops):
        return None
    return m.throughput_ips * info.gflop_per_image / peak.gops


def roofline(results: Results, precision: str, flops: float | None, ms: float | None,
             nbytes: float | None = None) -> tuple[float | None, float | None, float | None]:
    """An operation's achieved GFLOP/s, its share of the machine's peak at ``precision``, and its
    share of the roofline's bound: the peak, or the memory bandwidth times its arithmetic
    intensity (FLOPs per byte it must move) where that is lower. None where not known."""
    if not flops or not ms:
        return None, None, None
    gflops = flops / ms / 1e6
    peak = peak_for(results, precision)
    if peak is None or not peak.gops:
        return gflops, None, None
    bound = peak.gops
    bandwidth = results.system.peak.bandwidth if results.system.peak else None
    if nbytes and bandwidth:
        bound = min(bound, flops / nbytes * bandwidth.gbs)
    return gflops, gflops / peak.gops, gflops / bound


def share_text(results: Results, m: Measurement) -> str:
    share = peak_share(results, m)
    return "—" if share is None else f"{share:.0%}"


def peak_note(results: Results) -> list[str]:
    """The peaks the "of peak" column divides by, and what was not measured."""
    peak = results.system.peak
    if peak is None:
        return []
    rates = [f"{p.upper()} {r.gops:.0f} GOP/s ({r.isa}, {r.threads} cores)"
             for p, r in peak.rates.items()]
    how = "cached from an earlier run" if peak.cached else "measured by this run"
    bw = (f"; memory bandwidth {peak.bandwidth.gbs:.1f} GB/s (STREAM triad, "
          f"{peak.bandwidth.threads} cores)" if peak.bandwidth else "")
    return ["of peak: the model's GFLOP per image x images/s, as a share of this machine's peak "
            f"arithmetic rate for the precision ({'; '.join(rates) or 'none measured'}; {how}, "
            f"{peak.measured_at}){bw}" + "".join(f"; {n}" for n in peak.notes)]


def run_notes(results: Results) -> list[str]:
    """What holds for the whole run, under its tables: the INT8 calibration, where one row stands
    for both methods, how to read fidelity to FP32 (and each flag), the machine's state and
    peak."""
    cal = [f"INT8 calibration: {results.calibration['how']}."] if results.calibration else []
    return [*cal, *method_notes(results), *fidelity_notes(results), *machine_note(results),
            *peak_note(results)]
