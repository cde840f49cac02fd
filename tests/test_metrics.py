"""Observability: the Prometheus textfile, JSON logs, and the HTML report in a real browser."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from embedpipe import htmlreport, logs
from embedpipe.cli import app
from embedpipe.metrics import LAST_SUCCESS, write_textfile
from embedpipe.types import RecordError, RunReport

FILES = {
    "a.md": "The json module encodes Python objects as JSON text.\n\nUse json.dumps and json.loads.",
    "b.md": "Knead the dough for ten minutes, let it rise for an hour, then bake.",
    "c.txt": "Simmer onions, carrots and celery in stock; season with salt and pepper.",
}


def families(path: Path) -> dict[str, dict[str, float]]:
    """{metric: {collection: value}} through prometheus_client's own parser."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            out.setdefault(sample.name, {})[sample.labels["collection"]] = sample.value
    return out


def report(outcome: str = "done", **kwargs: Any) -> RunReport:
    r = RunReport(collection="docs", outcome=outcome, chunks_embedded=40, chunks_skipped=2,
                  chunks_deleted=1, tokens_embedded=4000, seconds=2.0, **kwargs)  # fmt: skip
    r.errors.append(RecordError("corpus", "bad.txt", "not UTF-8 text"))
    return r


# ---------------------------------------------------------------- Prometheus textfile


def test_metrics_textfile_parses_with_prometheus_client(tmp_path: Path) -> None:
    path = tmp_path / "embedpipe.prom"
    write_textfile(path, report(), collection="docs", now=1_700_000_000)
    got = families(path)
    assert got["embedpipe_chunks_embedded"] == {"docs": 40}
    assert got["embedpipe_chunks_skipped"]["docs"] == 2
    assert got["embedpipe_chunks_deleted"]["docs"] == 1
    assert got["embedpipe_tokens_per_second"]["docs"] == 2000
    assert got["embedpipe_errors"]["docs"] == 1
    assert got["embedpipe_run_duration_seconds"]["docs"] == 2.0
    assert got["embedpipe_run_success"]["docs"] == 1
    assert got[LAST_SUCCESS]["docs"] == 1_700_000_000


def test_failed_run_keeps_the_last_success_time(tmp_path: Path) -> None:
    path = tmp_path / "embedpipe.prom"
    write_textfile(path, report(), collection="docs", now=1_700_000_000)
    write_textfile(path, report("failed"), collection="docs", now=1_700_086_400)
    got = families(path)
    assert got[LAST_SUCCESS]["docs"] == 1_700_000_000
    assert got["embedpipe_run_success"]["docs"] == 0
    assert got["embedpipe_last_run_timestamp_seconds"]["docs"] == 1_700_086_400


def test_run_that_never_started_writes_only_its_status(tmp_path: Path) -> None:
    path = tmp_path / "embedpipe.prom"
    write_textfile(path, report(), collection="docs", now=1_700_000_000)
    write_textfile(path, None, collection="docs", now=1_700_000_100)
    got = families(path)
    assert "embedpipe_chunks_embedded" not in got
    assert got["embedpipe_run_success"]["docs"] == 0 and got[LAST_SUCCESS]["docs"] == 1_700_000_000


def test_collections_sharing_a_file_keep_each_others_samples(tmp_path: Path) -> None:
    path = tmp_path / "embedpipe.prom"
    write_textfile(path, report(), collection="docs", now=1)
    other = report()
    other.collection = 'we"ird\\name'
    write_textfile(path, other, collection=other.collection, now=2)
    got = families(path)
    assert got[LAST_SUCCESS] == {"docs": 1, 'we"ird\\name': 2}


def test_metrics_file_is_replaced_atomically_leaving_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "embedpipe.prom"
    path.write_text("stale\n")
    inode = path.stat().st_ino
    write_textfile(path, report(), collection="docs")
    assert path.stat().st_ino != inode  # a rename, not a rewrite in place
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "embedpipe.prom"
    ]


# ---------------------------------------------------------------- JSON logs


def test_json_formatter_writes_one_object_per_event_with_its_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("json")
    try:
        logs.record_error(
            logging.getLogger("embedpipe.pipeline"), RecordError("s", "line 3", "bad")
        )
        logging.getLogger("some.library").info("not ours")  # below WARNING: not shown
    finally:
        logs.configure("text")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["event"] == "record_error" and obj["level"] == "info"
    assert (obj["source"], obj["record"], obj["reason"]) == ("s", "line 3", "bad")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["ts"])


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real backfill through the CLI with JSON logs, a report and a metrics file."""
    tmp = tmp_path_factory.mktemp("obs")
    root = tmp / "corpus"
    root.mkdir()
    for name, text in FILES.items():
        (root / name).write_text(text)
    (root / "bad.txt").write_bytes(b"caf\xe9")
    args = ["backfill", str(root), "--sink", f"faiss:{tmp / 'index'}", "--collection", "docs",
            "--report", str(tmp / "run.json"), "--metrics", str(tmp / "m.prom"),
            "--log-format", "json", "--max-batch-tokens", "256", "--precision", "fp32"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    logs.configure("text")
    return {"result": result, "tmp": tmp}


def test_cli_json_logs_are_only_json_lines_with_run_events(cli_run: dict[str, Any]) -> None:
    result = cli_run["result"]
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stderr.strip().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("run_start") == 1 and kinds[-1] == "run_end"
    assert kinds.index("run_start") < kinds.index("record_error")
    [err] = [e for e in events if e["event"] == "record_error"]
    assert err["record"] == "bad.txt" and "UTF-8" in err["reason"]
    assert events[-1]["outcome"] == "done" and events[-1]["chunks_embedded"] == 3


def test_cli_metrics_flag_writes_the_textfile(cli_run: dict[str, Any]) -> None:
    got = families(cli_run["tmp"] / "m.prom")
    assert got["embedpipe_chunks_embedded"] == {"docs": 3}
    assert got["embedpipe_errors"] == {"docs": 1}
    assert got["embedpipe_run_success"] == {"docs": 1}


def test_run_report_carries_histogram_and_timeline(cli_run: dict[str, Any]) -> None:
    data = json.loads((cli_run["tmp"] / "run.json").read_text())
    assert sum(data["token_hist"]) == data["chunks_embedded"] == 3
    assert data["timeline"][-1][1:] == [3, data["real_tokens"], data["padded_tokens"]]


# ---------------------------------------------------------------- HTML report

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
