"""JSON logs (embedpipe/logs.py): one object per event with its fields, and a CLI run whose
stderr is only JSON lines from run_start to run_end."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

from embedpipe import logs
from embedpipe.types import RecordError
from tests.reportkit import cli_backfill


def test_json_formatter_writes_one_object_per_event_with_its_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("json")
    try:
        logs.record_error(
            logging.getLogger("embedpipe.runs.pipeline"), RecordError("s", "line 3", "bad")
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
    """The session's one real CLI backfill with JSON logs, a report and a metrics file."""
    return cli_backfill(tmp_path_factory)


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
