"""The HTML report in a real browser: headless Chromium renders it offline, plot included."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ponder.evaluation import evaluate, load_dataset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")]


def test_report_renders_in_headless_chromium(tmp_path: Path):
    result = evaluate(load_dataset("llmdrift-prime"), strategies=[], n_bootstrap=50)
    page = tmp_path / "report.html"
    page.write_text(result.to_html(), encoding="utf-8")
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<svg" in html and "llmdrift-prime" in html  # the plot is inline, not fetched
    assert "gpt-4-0314" in html and "oracle" in html
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--window-size=1300,2000",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a real, non-blank page
