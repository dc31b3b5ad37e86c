"""report.html: one self-contained page (inline CSS, figures as data URIs, no network) that tells a
reader what machine ran what, how fast, how stable, and how it was measured."""

from __future__ import annotations

import base64

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from visionbench.reporting.format import (
    fidelity_notes,
    method_notes,
    resource_notes,
    subject,
    tune_rows,
)
from visionbench.reporting.notices import notices
from visionbench.reporting.sections import sections
from visionbench.results import Results

TEMPLATES = Environment(
    loader=PackageLoader("visionbench.reporting", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    extensions=["jinja2.ext.do"],
    trim_blocks=True,
    lstrip_blocks=True,
)


def _code(text: str) -> Markup:
    """Plain text with `code` in backticks, as HTML."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


TEMPLATES.filters["code"] = _code


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def headline(results: Results) -> list[str]:
    """One sentence per engine and method: its throughput per precision, the speed-up over FP32,
    batch-1 p50."""
    lines = []
    for engine, method in dict.fromkeys((m.engine, m.method) for m in results.measurements):
        ok = {(m.precision, m.mode): m for m in results.measurements
              if (m.engine, m.method) == (engine, method) and m.status == "ok"}
        fp32 = ok.get(("fp32", "throughput"))
        parts = []
        for p in ("fp32", "bf16", "int8"):
            t, lat = ok.get((p, "throughput")), ok.get((p, "latency"))
            if t is None and lat is None:
                continue
            bits = []
            if t is not None:
                speedup = (f", {t.throughput_ips / fp32.throughput_ips:.2f}x FP32"
                           if fp32 is not None and fp32.throughput_ips and p != "fp32" else "")
                bits.append(f"{t.throughput_ips:.1f} images/s at batch {t.batch_size}{speedup}")
            if lat is not None and lat.latency is not None:
                bits.append(f"{lat.latency.p50_ms:.1f} ms per image at batch 1 (p50)")
            emulated = " (EMULATED)" if any(m.emulated for m in (t, lat) if m) else ""
            parts.append(f"{p.upper()}{emulated}: " + ", ".join(bits))
        name = engine + ("" if method == "reference" else f" ({method} method)")
        if parts:
            lines.append(f"{name} — " + "; ".join(parts) + ".")
        else:
            lines.append(f"{name} — nothing could be measured (see the notices).")
    return lines


def sweep_headline(results: Results) -> list[str]:
    """Per engine and precision: the best throughput and its batch size, and batch 1's."""
    lines = []
    ok = [m for m in results.measurements if m.status == "ok" and m.throughput_ips]
    for engine, p in dict.fromkeys((m.engine, m.precision) for m in ok):
        ms = sorted((m for m in ok if (m.engine, m.precision) == (engine, p)), key=lambda m: m.batch_size)
        best = max(ms, key=lambda m: m.throughput_ips or 0.0)
        text = f"{engine} {p.upper()} — best {best.throughput_ips:.1f} images/s at batch {best.batch_size}"
        if best.latency:
            text += f" (p99 {best.latency.p99_ms:.1f} ms per batch)"
        first = ms[0]
        if first is not best:
            text += (f"; {first.throughput_ips:.1f} images/s at batch {first.batch_size}, "
                     f"{best.throughput_ips / first.throughput_ips:.2f}x less")
        lines.append(text + ".")
    return lines or ["Nothing could be measured (see the notices)."]


def suite_headline(results: Results) -> list[str]:
    """Per engine and precision: the suite score and the geometric means."""
    from visionbench.results.suite import suite_rows

    return [f"{r.engine} {r.precision.upper()} — " + (
        f"suite score {r.score:.1f}; " if r.score is not None else
        f"no suite score ({len(r.missing)} workloads missing); ") + (
        f"{r.throughput_geomean:.1f} images/s and {r.p50_geomean_ms:.2f} ms at batch 1 "
        f"(geometric means over {r.workloads} workloads)" if r.workloads else "nothing measured")
        + (f", {r.speedup_vs_fp32:.2f}x FP32" if r.speedup_vs_fp32 and r.precision != "fp32"
           else "") + "." for r in suite_rows(results)] or ["Nothing could be measured."]


def tune_headline(results: Results) -> list[str]:
    """Per engine and precision: the setting the search named, and how it compares with the default."""
    return [f"{r['engine']} {r['precision'].upper()} — " + (
        f"{r['setting']}: {r['ips']} images/s, p99 {r['p99']} ms per batch; the default "
        f"{r['default']} images/s ({r['vs']}, {r['verdict']})." if r["command"] else f"{r['setting']}.")
        for r in tune_rows(results)]


def report_html(results: Results, figures: dict[str, dict[str, bytes]]) -> str:
    ms = results.measurements
    ok = [m for m in ms if m.status == "ok"]
    unstable = [m.id for m in ok if any(w.startswith("unstable") for w in m.warnings)]
    return TEMPLATES.get_template("report.html.j2").render(
        r=results,
        s=results.system.model_dump(),
        headline={"sweep": sweep_headline, "tune": tune_headline,
                  "suite": suite_headline}.get(results.kind, headline)(results),
        subject=subject(results).strip(),
        sections=sections(results),
        method_notes=method_notes(results),
        fidelity_notes=fidelity_notes(results),
        resource_notes=resource_notes(results),
        figures={name: data_uri(f["png"]) for name, f in figures.items()},
        notices=notices(results),
        unstable=unstable,
        n_ok=len(ok),
        batches={m.precision: m.batch_size for m in ms if m.mode == "throughput"},
        thr=next((m for m in ok if m.mode == "throughput"), None),
        lat=next((m for m in ok if m.mode == "latency"), None),
        int8=[m for m in ok if m.precision == "int8"],
        config=results.config.model_dump(),
    )
