"""The HTML report (embedpipe/htmlreport.py) and the series it charts: the run report's histogram
and timeline, `embedpipe report`, and the charts as headless Chromium renders them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from embedpipe import htmlreport
from embedpipe.cli import app
from tests.reportkit import cli_backfill, report


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The session's one real CLI backfill with JSON logs, a report and a metrics file."""
    return cli_backfill(tmp_path_factory)


def test_run_report_carries_histogram_and_timeline(cli_run: dict[str, Any]) -> None:
    data = json.loads((cli_run["tmp"] / "run.json").read_text())
    assert sum(data["token_hist"]) == data["chunks_embedded"] == 3
    assert data["timeline"][-1][1:] == [3, data["real_tokens"], data["padded_tokens"]]


CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: scripts/test.sh installs it (apt-get install chromium)",
)


def synthetic_report() -> dict[str, Any]:
    r = report()
    r.token_hist = [0, 5, 12, 30, 22, 9, 4, 0, 2]
    r.real_tokens, r.padded_tokens = 90_000, 100_000
    r.timeline = [[1.0 + i, 100 * i, 9_000 * i, 10_000 * i] for i in range(10)]
    return r.to_dict()


def headless(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp / 'profile'}", *args]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)


def test_report_command_writes_html_next_to_the_json(tmp_path: Path) -> None:
    src = tmp_path / "run.json"
    src.write_text(json.dumps(synthetic_report()))
    result = CliRunner().invoke(app, ["report", str(src)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run.html").read_text().startswith("<!doctype html>")


def test_report_of_an_old_run_without_series_says_so_instead_of_charting() -> None:
    page = htmlreport.render({"outcome": "done", "collection": "docs", "chunks_embedded": 3})
    assert page.count("class='empty'") == 3


@needs_chromium
def test_html_report_charts_render_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "run.html"
    page.write_text(htmlreport.render(synthetic_report()))
    done = headless(["--dump-dom", page.as_uri()], tmp_path)
    dom = done.stdout
    assert "<svg" in dom, done.stderr[-2000:]
    bars = re.findall(r"<rect class=\"bar\"[^>]*data-count=\"(\d+)\"", dom)
    assert [int(b) for b in bars] == [0, 5, 12, 30, 22, 9, 4, 0, 2]
    throughput = re.search(r'<svg class="chart" id="throughput".*?</svg>', dom, re.S)
    assert throughput and len(re.findall(r"<circle class=\"point\"", throughput[0])) == 9
    padding = re.search(r'<svg class="chart" id="padding".*?</svg>', dom, re.S)
    values = re.findall(r'data-value="([\d.]+)"', padding[0]) if padding else []
    assert values and all(abs(float(v) - 0.9) < 1e-6 for v in values)
    assert 'id="outcome">done<' in dom and "bad.txt" in dom


@needs_chromium
def test_html_report_screenshot_is_not_blank(tmp_path: Path) -> None:
    page = tmp_path / "run.html"
    page.write_text(htmlreport.render(synthetic_report()))
    shot = tmp_path / "shot.png"
    headless([f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri()], tmp_path)
    assert shot.is_file() and shot.stat().st_size > 20_000  # a blank page compresses to ~5 kB
