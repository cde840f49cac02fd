"""End to end through the `embedpipe` command, as a user runs it, into local Qdrant and FAISS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_pipeline import FILES

pytestmark = pytest.mark.slow


def embedpipe(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter, as cron or an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "embedpipe", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["qdrant", "faiss"])
def test_backfill_and_query_through_the_cli(kind: str, make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    sink = f"{kind}:{tmp_path / 'index'}"
    report = tmp_path / "report.json"
    done = embedpipe("backfill", str(root), "--sink", sink, "--collection", "docs", "--report", str(report),
                     "--max-batch-tokens", "1024", "--precision", "fp32")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "embedded" in done.stderr  # the summary table
    data = json.loads(report.read_text())
    assert (
        data["docs_read"] == len(FILES)
        and data["chunks_embedded"] > 0
        and data["outcome"] == "done"
    )
    found = embedpipe("query", "serialise a dict to a JSON string", "--sink", sink, "--collection", "docs",
                      "-k", "2", "--json")  # fmt: skip
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits[0]["doc_id"] == "python/json.md" and hits[0]["score"] > 0.3
    table = embedpipe("query", "bake bread", "--sink", sink, "--collection", "docs", "-k", "1")
    assert "cooking/bread.md" in table.stdout


def test_run_uses_the_config_file_and_env_overrides(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    config = tmp_path / "nightly.yaml"
    config.write_text(
        f"source:\n  uri: {root}\nsink:\n  uri: qdrant:{tmp_path / 'q'}\n  collection: docs\nmode: full\n"
    )
    report = tmp_path / "r.json"
    done = embedpipe(
        "run",
        str(config),
        "--report",
        str(report),
        env={"EMBEDPIPE_SINK__URI": f"faiss:{tmp_path / 'f'}"},
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert data["sink"].startswith("faiss:") and data["mode"] == "full"
    status = embedpipe("status", "--sink", f"faiss:{tmp_path / 'f'}", "--json")
    rows = json.loads(status.stdout)
    assert rows[0]["chunks"] == data["chunks_embedded"] and rows[0]["runs"][0]["outcome"] == "done"


def test_usage_errors_exit_2_with_the_fix(tmp_path: Path) -> None:
    bad_sink = embedpipe("backfill", str(tmp_path), "--sink", "mongo://x")
    assert bad_sink.returncode == 2 and "qdrant:PATH" in bad_sink.stderr
    no_config = embedpipe("run", str(tmp_path / "missing.yaml"))
    assert no_config.returncode == 2 and "No config file" in no_config.stderr


def test_source_that_does_not_exist_fails_with_exit_1(tmp_path: Path) -> None:
    missing = embedpipe("backfill", str(tmp_path / "nowhere"), "--sink", f"faiss:{tmp_path / 'f'}")
    assert missing.returncode in (1, 2) and "No source at" in missing.stderr


def test_strict_exits_1_when_a_record_failed(tmp_path: Path) -> None:
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"id": "a", "text": "fine"}\n{broken\n')
    lenient = embedpipe("backfill", str(jsonl), "--sink", f"faiss:{tmp_path / 'f'}")
    assert lenient.returncode == 0 and "line 2" in lenient.stderr
    strict = embedpipe("backfill", str(jsonl), "--sink", f"faiss:{tmp_path / 'g'}", "--strict")
    assert strict.returncode == 1
