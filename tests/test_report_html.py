"""The HTML report (embedpipe/report/html.py) and the series it charts: the run report's histogram
and timeline, `embedpipe report`, and the charts as headless Chromium renders them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from embedpipe.cli import app
from embedpipe.report import html as htmlreport
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


# Where the screenshot test leaves the page as Chromium drew it, for a person to look at.
SCREENSHOT = Path(__file__).resolve().parent.parent / "build" / "test-artifacts" / "html-report.png"


def synthetic_report() -> dict[str, Any]:
    r = report()
    r.token_hist = [0, 5, 12, 30, 22, 9, 4, 0, 2]
    r.real_tokens, r.padded_tokens = 90_000, 100_000
    r.timeline = [[1.0 + i, 100 * i, 9_000 * i, 10_000 * i] for i in range(10)]
    r.startup_seconds, r.seconds = 30.0, 64.0
    r.phases = [["embedding", 0.5], ["writing", 50.0], ["building index", 51.0], ["swapping", 63.5]]
    r.notes.append("precision fp32: bf16 is not native on this CPU")
    return r.to_dict()


def headless(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    env = {**os.environ, "HOME": str(tmp)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)


def test_report_command_writes_html_where_o_says(tmp_path: Path) -> None:
    src = tmp_path / "run.json"
    src.write_text(json.dumps(synthetic_report()))
    result = CliRunner().invoke(app, ["report", str(src), "-o", str(tmp_path / "out.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.html").read_text().startswith("<!doctype html>")
    assert result.stdout == "" and "out.html" in result.stderr


def test_report_of_an_old_run_without_series_says_so_instead_of_charting() -> None:
    page = htmlreport.render({"outcome": "done", "collection": "docs", "chunks_embedded": 3})
    assert page.count("class='empty'") == 4


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
    phases = re.findall(r'data-phase="([^"]+)" data-seconds="([\d.]+)"', dom)
    assert [name for name, _ in phases][:3] == ["start-up", "opening", "embedding"]
    assert sum(float(t) for _, t in phases) == pytest.approx(94.0)  # the wall time, 1m34s


@needs_chromium
def test_html_report_screenshot_is_not_blank(tmp_path: Path) -> None:
    page = tmp_path / "run.html"
    page.write_text(htmlreport.render(synthetic_report()))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    headless([f"--screenshot={SCREENSHOT}", "--window-size=1200,1600", page.as_uri()], tmp_path)
    # Kept for a person to look at: build/test-artifacts/html-report.png.
    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 20_000  # blank: ~5 kB


# ---------------------------------------------------------------- where the page lands


def test_report_goes_to_stdout_when_it_is_not_a_terminal(tmp_path: Path) -> None:
    src = tmp_path / "run.json"
    src.write_text(json.dumps(synthetic_report()))
    result = CliRunner().invoke(app, ["report", str(src)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!doctype html>") and not (tmp_path / "run.html").exists()


def test_report_redirected_by_the_shell_lands_in_that_file(tmp_path: Path) -> None:
    src = tmp_path / "run.json"
    src.write_text(json.dumps(synthetic_report()))
    with (tmp_path / "report.html").open("w") as stdout:
        subprocess.run(
            [sys.executable, "-m", "embedpipe", "report", str(src)],
            stdout=stdout,
            cwd=tmp_path,
            check=True,
            timeout=120,
        )
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "run.json"]


def test_report_dash_is_stdout_not_a_file_named_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "run.json"
    src.write_text(json.dumps(synthetic_report()))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", str(src), "-o", "-"])
    assert result.exit_code == 0 and result.stdout.startswith("<!doctype html>")
    assert not (tmp_path / "-").exists()


# ---------------------------------------------------------------- what the page shows


def test_notes_are_listed_apart_from_the_record_errors() -> None:
    page = htmlreport.render(synthetic_report())
    errors = re.search(r"<table id='errors'>.*?</table>", page, re.S)
    notes = re.search(r"<ul id='notes'.*?</ul>", page, re.S)
    assert errors and "bad.txt" in errors[0] and "precision" not in errors[0]
    assert notes and "precision fp32" in notes[0]


def test_histogram_of_small_counts_labels_each_gridline_once() -> None:
    chart = htmlreport.histogram_svg({"token_hist": [2, 1, 0, 1], "token_hist_width": 8})
    labels = re.findall(r"text-anchor='end'>([^<]*)<", chart)
    assert labels == ["0", "1", "2"]


def test_every_chart_slot_is_filled() -> None:
    page = htmlreport.render(synthetic_report())
    assert page.count("<figure>") == 4 and "class='empty'" not in page


def test_duration_is_wall_time_with_start_up_as_its_own_part() -> None:
    page = htmlreport.render(synthetic_report())
    card = re.search(r"data-key='duration'>.*?</div></div>", page, re.S)
    assert card and "1m34s" in card[0] and "start-up 30s" in card[0] and "run 1m04s" in card[0]
    times = dict(htmlreport.phase_times(synthetic_report()))
    assert times == pytest.approx(
        {
            "start-up": 30.0,
            "opening": 0.5,
            "embedding": 49.5,
            "writing": 1.0,
            "building index": 12.5,
            "swapping": 0.5,
        }
    )
