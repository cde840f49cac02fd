"""The Prometheus textfile (embedpipe/metrics.py): what it holds after a run, a failed run and
a run that never started; shared between collections, replaced atomically, written by --metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedpipe.metrics import LAST_SUCCESS, write_textfile
from tests.reportkit import cli_backfill, report


def families(path: Path) -> dict[str, dict[str, float]]:
    """{metric: {collection: value}} through prometheus_client's own parser."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            out.setdefault(sample.name, {})[sample.labels["collection"]] = sample.value
    return out


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The session's one real CLI backfill with JSON logs, a report and a metrics file."""
    return cli_backfill(tmp_path_factory)


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


def test_cli_metrics_flag_writes_the_textfile(cli_run: dict[str, Any]) -> None:
    got = families(cli_run["tmp"] / "m.prom")
    assert got["embedpipe_chunks_embedded"] == {"docs": 3}
    assert got["embedpipe_errors"] == {"docs": 1}
    assert got["embedpipe_run_success"] == {"docs": 1}
