"""The HTML reports in a real browser: headless Chromium opens them from disk, logs no console
error, and renders both figures (non-blank, at their expected size)."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import matplotlib.image as mpimg
import pytest

pytestmark = pytest.mark.slow  # end-to-end: make test-slow and CI run it


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        message = "headless Chromium needs the Debian packages chromium and chromium-driver"
        if os.environ.get("VISIONBENCH_REQUIRE_BROWSER") == "1":  # CI: the browser test must run
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # No background networking: the page must render with no network at all, and a closed network
    # would otherwise fill the log with refused connections.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    yield driver
    driver.quit()


def check_page(driver, page: Path, figure_ids: set[str]) -> None:
    driver.get(page.resolve().as_uri())
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.id, i.complete, i.naturalWidth, i.naturalHeight])")
    assert {i[0] for i in images} == figure_ids
    for fid, complete, width, height in images:
        assert complete and width >= 500 and height >= 300, (fid, width, height)
        el = driver.find_element("id", fid)
        driver.execute_script("arguments[0].scrollIntoView()", el)
        time.sleep(0.2)
        shot = mpimg.imread(io.BytesIO(el.screenshot_as_png), format="png")
        # Laid out at its natural size, or scaled down to the page with its aspect ratio kept
        # (sizes include the 1px border), and not blank.
        shown_w, shown_h = el.size["width"] - 2, el.size["height"] - 2
        assert 400 <= shown_w <= width and abs(shot.shape[1] - el.size["width"]) <= 2
        assert shown_h / shown_w == pytest.approx(height / width, rel=0.02)
        assert shot[..., :3].std() > 0.05, fid
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_report_renders_in_a_browser(browser, quick_run):
    _, out = quick_run
    check_page(browser, out / "report.html", {"fig-throughput", "fig-latency"})
    assert "image classification on" in browser.title or "visionbench" in browser.title
    if shot := os.environ.get("VISIONBENCH_SCREENSHOT"):  # the README's picture of a report
        browser.set_window_size(1200, 1500)
        browser.get((out / "report.html").resolve().as_uri())
        assert browser.save_screenshot(shot)


def test_comparison_renders_in_a_browser(browser, quick_run, tmp_path):
    from conftest import vb

    _, out = quick_run
    proc = vb("compare", str(out), str(out), "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    check_page(browser, tmp_path / "compare.html", {"fig-throughput", "fig-latency"})


def test_a_broken_page_is_caught(browser, tmp_path):
    """The console check itself works: a page with a failing script logs a SEVERE entry."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>undefined_function();</script></body></html>")
    browser.get(page.as_uri())
    assert any(e["level"] == "SEVERE" for e in browser.get_log("browser"))


def test_the_profile_figure_renders_in_a_browser(browser, tmp_path):
    """`visionbench profile`'s report: the figure of where the batch-1 time goes, per engine and
    precision, renders at its size and not blank."""
    from conftest import TINY, vb

    out = tmp_path / "profile"
    proc = vb("profile", *TINY, "--engine", "onnxruntime,openvino", "--precision", "fp32,int8",
              "--iterations", "5", "--warmup", "1", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    check_page(browser, out / "report.html", {"fig-profile"})
    assert (out / "profile.png").stat().st_size > 0 and (out / "profile.svg").stat().st_size > 0
