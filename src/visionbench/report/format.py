"""How numbers and measurements read in every report (console, Markdown, HTML)."""

from __future__ import annotations

from visionbench.results import Accuracy, Measurement, Results


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def ran_as(m: Measurement | Accuracy) -> str:
    """What the engine really executed, e.g. ``int8 (54 int8 ops)``, or the measurement's status."""
    if m.status != "ok":
        return m.status
    text = m.executed_precision or "?"
    if m.quantized_ops is not None:
        text += f" ({m.quantized_ops} int8 ops)"
    return text + (" EMULATED" if m.emulated else "")


def batch_text(m: Measurement) -> str:
    """The batch size, and the instances where there were several pinned ones."""
    if m.layout is None:
        return str(m.batch_size)
    return f"{m.batch_size} ({m.instances}x{m.cores_per_instance} cores)"


def batch_latency(m: Measurement) -> list[str]:
    """p50 and p99 of one call (one whole batch) in ms: a sweep's latency column."""
    lat = m.latency
    return [fmt(lat.p50_ms if lat else None), fmt(lat.p99_ms if lat else None)]


def throughput_title(results: Results) -> str:
    return ("Throughput and latency by batch size (images/s; ms per batch)"
            if results.kind == "sweep" else "Throughput (images/s, large batch)")


def latency_values(m: Measurement) -> list[str]:
    """p50, p90, p99, p99.9 and mean in ms."""
    lat = m.latency
    vals = [lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.p999_ms, lat.mean_ms] if lat else [None] * 5
    return [fmt(v) for v in vals]


def fp32_ratios(ms: list[Measurement]) -> dict[str, str]:
    """Each throughput measurement's speed relative to FP32 on the same engine, by id: FP32 at the
    same batch size where there is one (a sweep), else the engine's FP32 (the study's batch)."""
    fp32 = [m for m in ms if m.mode == "throughput" and m.precision == "fp32" and m.status == "ok"]
    same_batch = {(m.engine, m.batch_size): m.throughput_ips for m in fp32}
    engine = {m.engine: m.throughput_ips for m in fp32}

    def ratio(m: Measurement) -> str:
        base = same_batch.get((m.engine, m.batch_size)) or engine.get(m.engine)
        return f"{m.throughput_ips / base:.2f}x" if m.throughput_ips and base else "—"

    return {m.id: ratio(m) for m in ms if m.mode == "throughput"}
