"""report.html: self-contained, complete, and telling the reader what the run means."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from visionbench.results import load

from conftest import ENGINE_NAMES


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, str] = {}
        self.external: list[str] = []
        self.scripts = 0
        self.ids: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"] or "")
        if tag == "img":
            self.images[a.get("id") or ""] = a.get("src") or ""
        if tag == "script":
            self.scripts += 1
        fetched = tag in ("img", "script", "iframe") and not (a.get("src") or "").startswith("data:")
        if tag == "link" or fetched:
            self.external.append(f"{tag} {a}")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


@pytest.mark.slow
def test_report_html_is_self_contained_and_complete(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr
    results = load(out)
    page = parse(out / "report.html")
    assert page.external == [] and page.scripts == 0  # opens offline, nothing fetched
    assert set(page.images) == {"fig-throughput", "fig-latency"}
    for src in page.images.values():
        assert src.startswith("data:image/png;base64,")
        img = mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert img.shape[1] >= 500 and img[..., :3].std() > 0.05
    text = " ".join(" ".join(page.text).split())
    sections = {"result", "throughput", "latency", "notices", "method", "system", "software", "config"}
    assert sections <= page.ids
    assert results.system.cpu_model in text and results.system.hostname in text
    for name, version in results.software.items():
        assert f"{name} {version}" in text or (name in text and version in text)
    for engine in ENGINE_NAMES:
        assert f"{engine} —" in text  # one headline sentence per engine
    ok = [m for m in results.measurements if m.status == "ok" and m.mode == "throughput"]
    for m in ok:
        assert f"{m.throughput_ips:.1f}" in text
    # The methodology states the method with this run's numbers, and the notices explain the gaps.
    assert "median of the repeats" in text and "batch size 1" in text and "warm-up" in text
    assert results.calibration["source"] == "synthetic" and results.calibration["how"] in text
    for m in results.measurements:
        if m.status != "ok":
            assert m.reason in text
    assert " ".join(results.command) in text


@pytest.mark.slow
def test_report_html_flags_unstable_and_emulated_runs(quick_run, tmp_path):
    from visionbench.reporting.html import report_html

    _, out = quick_run
    results = load(out)
    m = next(m for m in results.measurements if m.status == "ok")
    m.warnings.append("unstable: throughput varies 12.0% between repeats (over 5%)")
    m.emulated = True
    html = report_html(results, {})
    assert "measurements varied more than 5% between repeats" in html and m.id in html
    assert "EMULATED" in html
